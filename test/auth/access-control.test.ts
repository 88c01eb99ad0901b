/**
 * AccessControl on hand-made calls: bearer tokens, certificate identities, grants by glob and
 * level, the refusal metric and audit lines (never holding the token), and reloads.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, test } from "node:test";
import type { PeerCertificate } from "node:tls";
import { Metadata } from "@grpc/grpc-js";
import { Registry } from "prom-client";
import {
  AccessControl,
  AuthError,
  type CallCredentialsSource,
  type Principal,
} from "../../server/auth/access-control.js";
import { certificateIdentities, parseSubjectAltNames } from "../../server/auth/certificate-identity.js";
import { tempDir } from "../support/temp-dir.js";

const hash = (token: string) => createHash("sha256").update(token).digest("hex");

const TOKENS = {
  reader: "read-token-1111",
  writer: "write-token-2222",
  admin: "admin-token-3333",
};

const POLICY = {
  tokens: [
    { name: "reader", sha256: hash(TOKENS.reader), grants: [{ partitions: "billing", access: "read" }] },
    {
      name: "writer",
      sha256: hash(TOKENS.writer),
      grants: [
        { partitions: "billing-*", access: "write" },
        { partitions: "audit", access: "read" },
      ],
    },
    { name: "admin", sha256: hash(TOKENS.admin), grants: [{ partitions: "*", access: "admin" }] },
    {
      name: "ops-cert",
      client_cert: "DNS:ops.example.com",
      grants: [{ partitions: "ops", access: "write" }],
    },
  ],
};

function call(options: { token?: string; header?: string[]; cert?: Partial<PeerCertificate> } = {}) {
  const metadata = new Metadata();
  if (options.token !== undefined) metadata.set("authorization", `Bearer ${options.token}`);
  for (const value of options.header ?? []) metadata.add("authorization", value);
  const source: CallCredentialsSource = {
    metadata,
    getAuthContext: () =>
      options.cert === undefined ? {} : { sslPeerCertificate: options.cert as PeerCertificate },
    getPeer: () => "127.0.0.1:4242",
  };
  return source;
}

let dir: { path: string; remove(): Promise<void> };
let file: string;
before(async () => {
  dir = await tempDir();
  file = join(dir.path, "tokens.json");
});
after(async () => {
  await dir.remove();
});

function open(policy: unknown = POLICY, clientCertificates = true) {
  writeFileSync(file, JSON.stringify(policy));
  const lines: string[] = [];
  const registry = new Registry();
  const access = AccessControl.open({
    tokensFile: file,
    clientCertificates,
    registry,
    log: (l) => lines.push(l),
  });
  return { access, lines, registry };
}

function code(fn: () => unknown): string {
  try {
    fn();
    return "OK";
  } catch (err) {
    assert.ok(err instanceof AuthError, String(err));
    return err.kind;
  }
}

test("tokens: each gets exactly its grants", () => {
  const { access } = open();
  const check = (token: string | undefined, partition: string, need: "read" | "write" | "admin") =>
    code(() => access.check(call(token === undefined ? {} : { token }), "M", partition, need));
  assert.equal(check(undefined, "billing", "read"), "Unauthenticated");
  assert.equal(check("nope", "billing", "read"), "Unauthenticated");
  assert.equal(check(TOKENS.reader, "billing", "read"), "OK");
  assert.equal(check(TOKENS.reader, "billing", "write"), "PermissionDenied");
  assert.equal(check(TOKENS.reader, "billing-eu", "read"), "PermissionDenied");
  assert.equal(check(TOKENS.writer, "billing-eu", "write"), "OK");
  assert.equal(check(TOKENS.writer, "billing-eu", "read"), "OK");
  assert.equal(check(TOKENS.writer, "billing-eu", "admin"), "PermissionDenied");
  assert.equal(check(TOKENS.writer, "billing", "read"), "PermissionDenied");
  assert.equal(check(TOKENS.writer, "audit", "read"), "OK");
  assert.equal(check(TOKENS.writer, "audit", "write"), "PermissionDenied");
  assert.equal(check(TOKENS.admin, "anything", "admin"), "OK");
});

test("the authorization header must be one well-formed Bearer value", () => {
  const { access } = open();
  const reason = (source: CallCredentialsSource) => {
    const result = access.authenticate(source, "M");
    return result instanceof AuthError ? result.reason : "ok";
  };
  assert.equal(reason(call({ header: [`bearer ${TOKENS.reader}`] })), "ok");
  assert.equal(reason(call({ header: [`Basic ${TOKENS.reader}`] })), "malformed_authorization");
  assert.equal(reason(call({ header: ["Bearer "] })), "malformed_authorization");
  assert.equal(
    reason(call({ header: [`Bearer ${TOKENS.reader}`, `Bearer ${TOKENS.admin}`] })),
    "malformed_authorization",
  );
  assert.equal(reason(call({})), "missing_credentials");
  assert.equal(reason(call({ token: "wrong" })), "unknown_token");
});

test("refusals name the partition and access, count by reason and log who, never the token", async () => {
  const { access, lines, registry } = open();
  assert.throws(
    () => access.check(call({ token: TOKENS.reader }), "Put", "billing", "write"),
    (err: unknown) => {
      assert.ok(err instanceof AuthError);
      assert.equal(err.message, 'permission denied: write access to partition "billing" is needed');
      return true;
    },
  );
  assert.throws(() => access.check(call({ token: "leaked-secret" }), "Get", "p\nforged", "read"));
  assert.throws(() => access.check(call(), "Keys", "p", "read"));
  assert.match(
    lines.shift() ?? "",
    /^auth: 3 token\(s\) and 1 certificate identity\(ies\) from .*tokens\.json$/,
  );
  assert.equal(lines.length, 3);
  assert.equal(
    lines[0],
    'auth: refused method=Put partition="billing" who=token "reader" peer=127.0.0.1:4242 reason=permission_denied',
  );
  assert.match(lines[1] ?? "", /method=Get partition="p\\nforged" who=unknown-token .*reason=unknown_token$/);
  assert.match(lines[2] ?? "", /who=anonymous .*reason=missing_credentials$/);
  for (const line of lines) {
    for (const token of [...Object.values(TOKENS), "leaked-secret"]) {
      assert.ok(!line.includes(token) && !line.includes(hash(token)), line);
    }
  }
  const text = await registry.metrics();
  assert.match(text, /metadata_auth_refused_total\{reason="permission_denied"\} 1/);
  assert.match(text, /metadata_auth_refused_total\{reason="unknown_token"\} 1/);
  assert.match(text, /metadata_auth_refused_total\{reason="missing_credentials"\} 1/);
});

test("certificates: a SAN or CN in the file holds its grants; other verified certificates hold none", () => {
  const { access } = open();
  const ops = {
    subject: { CN: "whoever" },
    subjectaltname: "DNS:ops.example.com",
  } as Partial<PeerCertificate>;
  assert.equal(
    code(() => access.check(call({ cert: ops }), "Put", "ops", "write")),
    "OK",
  );
  assert.equal(
    code(() => access.check(call({ cert: ops }), "Put", "billing", "read")),
    "PermissionDenied",
  );
  const stranger = { subject: { CN: "stranger" } } as Partial<PeerCertificate>;
  const known = access.authenticate(call({ cert: stranger }), "Get");
  assert.ok(!(known instanceof AuthError));
  assert.equal(known.name, "certificate CN=stranger");
  assert.equal(
    code(() => access.check(call({ cert: stranger }), "Get", "ops", "read")),
    "PermissionDenied",
  );
  // A bearer token decides when both are sent.
  assert.equal(
    code(() => access.check(call({ cert: ops, token: TOKENS.reader }), "Put", "ops", "write")),
    "PermissionDenied",
  );
});

test("with a client CA and no tokens file, every verified certificate has every access", () => {
  const access = AccessControl.open({ clientCertificates: true, registry: new Registry(), log: () => {} });
  const cert = { subject: { CN: "svc" } } as Partial<PeerCertificate>;
  const principal = access.check(call({ cert }), "Clear", "any", "admin");
  assert.equal(principal.name, "certificate CN=svc");
  // A token means nothing without a tokens file: the certificate still decides.
  assert.equal(
    access.check(call({ cert, token: "stray" }), "Put", "any", "write").name,
    "certificate CN=svc",
  );
  assert.equal(
    code(() => access.check(call(), "Get", "any", "read")),
    "Unauthenticated",
  );
});

test("with no tokens file and no client CA, calls are anonymous and allowed", () => {
  const access = AccessControl.open({ registry: new Registry() });
  assert.equal(access.enabled, false);
  assert.equal(access.check(call(), "Clear", "any", "admin").name, "anonymous");
});

test("readable filters partition names to the granted ones", () => {
  const { access } = open();
  const writer = access.authenticate(call({ token: TOKENS.writer }), "ListPartitions") as Principal;
  assert.deepEqual(access.readable(writer, ["audit", "billing", "billing-eu", "other"]), [
    "audit",
    "billing-eu",
  ]);
});

test("reload: a revoked token is refused on its next use, even by a principal already authenticated", async () => {
  const { access, lines, registry } = open();
  const writer = access.authenticate(call({ token: TOKENS.writer }), "Write") as Principal;
  const admin = access.authenticate(call({ token: TOKENS.admin }), "Write") as Principal;
  assert.equal(access.authorize(call(), writer, "Write", "billing-eu", "write"), undefined);
  writeFileSync(file, JSON.stringify({ tokens: POLICY.tokens.filter((t) => t.name !== "writer") }));
  assert.equal(access.reload(), true);
  const refused = access.authorize(call(), writer, "Write", "billing-eu", "write");
  assert.ok(
    refused instanceof AuthError && refused.kind === "Unauthenticated" && refused.reason === "revoked",
  );
  assert.equal(access.authorize(call(), admin, "Write", "billing-eu", "write"), undefined);
  assert.equal(
    code(() => access.check(call({ token: TOKENS.writer }), "Put", "billing-eu", "write")),
    "Unauthenticated",
  );

  // A bad file keeps the previous policy and says why.
  writeFileSync(file, "{ not json");
  assert.equal(access.reload(), false);
  assert.match(lines.at(-1) ?? "", /^auth: keeping the previous tokens: .*tokens\.json: not JSON/);
  assert.equal(
    code(() => access.check(call({ token: TOKENS.admin }), "Put", "x", "write")),
    "OK",
  );
  const text = await registry.metrics();
  assert.match(text, /metadata_auth_reloads_total\{result="ok"\} 1/);
  assert.match(text, /metadata_auth_reloads_total\{result="failed"\} 1/);
});

test("subject alternative names are parsed as Node spells them, quoted values included", () => {
  assert.deepEqual(parseSubjectAltNames("DNS:a.example, IP Address:127.0.0.1, URI:spiffe://x/y"), [
    ["DNS", "a.example"],
    ["IP Address", "127.0.0.1"],
    ["URI", "spiffe://x/y"],
  ]);
  assert.deepEqual(parseSubjectAltNames('DNS:"evil, DNS:good", email:a@b'), [
    ["DNS", "evil, DNS:good"],
    ["email", "a@b"],
  ]);
  assert.deepEqual(
    certificateIdentities({
      subject: { CN: "svc" },
      subjectaltname: "DNS:svc.local, IP Address:10.0.0.1",
    } as unknown as PeerCertificate),
    ["CN=svc", "DNS:svc.local", "IP:10.0.0.1"],
  );
});

test("audit lines are limited per second; the ones left out are reported and still counted", async () => {
  writeFileSync(file, JSON.stringify(POLICY));
  const lines: string[] = [];
  const registry = new Registry();
  let now = 5_000;
  const access = AccessControl.open({
    tokensFile: file,
    registry,
    log: (l) => lines.push(l),
    auditLinesPerSecond: 3,
    now: () => now,
  });
  lines.length = 0;
  for (let i = 0; i < 10; i++) access.authenticate(call({ token: `bad-${i}` }), "Get");
  assert.equal(lines.length, 3);
  now += 999;
  access.authenticate(call(), "Get");
  assert.equal(lines.length, 3);
  now += 1;
  access.authenticate(call(), "Get");
  assert.deepEqual(lines.slice(3), [
    "auth: 8 refused call(s) not logged (over 3 lines/s); metadata_auth_refused_total counts them",
    "auth: refused method=Get partition=- who=anonymous peer=127.0.0.1:4242 reason=missing_credentials",
  ]);
  const text = await registry.metrics();
  assert.match(text, /metadata_auth_refused_total\{reason="unknown_token"\} 10/);
  assert.match(text, /metadata_auth_refused_total\{reason="missing_credentials"\} 2/);
});
