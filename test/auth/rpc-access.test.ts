/**
 * Access control end to end over real grpc-js: every RPC (the Write stream and Health included) x
 * every kind of caller -> the expected
 * status code, with the partition on disk unchanged (byte for byte) by every refused call and a
 * partition nobody may write never created.
 *
 * Two servers, since a server with --tls-client-ca takes no connection without a certificate:
 * - "tokens": --auth-tokens on plaintext loopback; callers with no credentials, an unknown
 *   token, a read token, a write token for other partitions, a write token, an admin token.
 * - "mtls": --tls-client-ca plus the same tokens file, whose `client_cert` entry grants
 *   CN=cert-writer; callers with that certificate, with a certificate the file does not name,
 *   and with that second certificate plus a write token (the token decides).
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { existsSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, test } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { type ClientOptions, MetadataClient } from "../../clients/ts/metadata-client.js";
import { startTestServer, type TestServer } from "../support/in-process-server.js";
import { utf8 } from "../support/store-helpers.js";
import { createTestPki, type TestPki } from "../support/test-pki.js";
import { openWriteStream } from "../support/write-stream-client.js";

const TARGET = "target";
/** A partition no caller but admin may write: refused calls must never create it. */
const FRESH = "fresh";

const TOKENS = {
  reader: "tok-reader-0001",
  otherWriter: "tok-other-0002",
  writer: "tok-writer-0003",
  admin: "tok-admin-0004",
};
const hash = (token: string) => createHash("sha256").update(token).digest("hex");

const POLICY = {
  tokens: [
    { name: "reader", sha256: hash(TOKENS.reader), grants: [{ partitions: TARGET, access: "read" }] },
    {
      name: "other-writer",
      sha256: hash(TOKENS.otherWriter),
      grants: [{ partitions: "other-*", access: "write" }],
    },
    { name: "writer", sha256: hash(TOKENS.writer), grants: [{ partitions: "t*", access: "write" }] },
    { name: "admin", sha256: hash(TOKENS.admin), grants: [{ partitions: "*", access: "admin" }] },
    { name: "cert-writer", client_cert: "CN=cert-writer", grants: [{ partitions: TARGET, access: "write" }] },
  ],
};

type Rpc =
  | "Put"
  | "Get"
  | "Remove"
  | "Retain"
  | "Keys"
  | "Sync"
  | "Clear"
  | "Commit"
  | "ListPartitions"
  | "Write"
  | "Watch"
  | "Health";
const RPCS: Rpc[] = [
  "Put",
  "Get",
  "Remove",
  "Retain",
  "Keys",
  "Sync",
  "Clear",
  "Commit",
  "ListPartitions",
  "Write",
  "Watch",
  "Health",
];
const READS = new Set<Rpc>(["Get", "Keys", "Watch"]);

/**
 * Runs `rpc` on `partition`; resolves with the status name and, for ListPartitions, the names.
 * `raw` (a plain grpc-js client on the same channel credentials) serves Health, without
 * credentials, and the Write stream, with `token` as call metadata: one put to `partition`,
 * whose code is the stream's when the stream fails, else the answer's.
 */
async function invoke(
  client: MetadataClient,
  raw: grpc.Client,
  token: string | undefined,
  rpc: Rpc,
  partition: string,
): Promise<{ code: string; names?: string[] }> {
  const options = { partition, deadlineMs: 10_000 };
  try {
    switch (rpc) {
      case "Put":
        await client.put(utf8("k"), utf8("v2"), options);
        break;
      case "Get":
        await client.get(utf8("k"), options);
        break;
      case "Remove":
        await client.remove(utf8("gone"), options);
        break;
      case "Retain":
        await client.retain({ prefix: utf8("k") }, options);
        break;
      case "Keys":
        for await (const _ of client.keys(options)) {
          // Read to the end.
        }
        break;
      case "Watch":
        // From the first version (the seeding put, still in the history): one message, then leave.
        for await (const _ of client.watch({ ...options, startVersion: 1n })) break;
        break;
      case "Sync":
        await client.sync(options);
        break;
      case "Clear":
        await client.clear(options);
        break;
      case "Commit":
        await client.commit([{ put: { key: utf8("c"), value: utf8("1") } }], [], options);
        break;
      case "ListPartitions":
        return { code: "OK", names: await client.listPartitions({ deadlineMs: 10_000 }) };
      case "Write": {
        const metadata = new grpc.Metadata();
        if (token !== undefined) metadata.set("authorization", `Bearer ${token}`);
        const stream = openWriteStream(raw, metadata);
        stream.send({
          id: 7n,
          request: { case: "put", value: { partition, key: utf8("w"), value: utf8("1") } },
        });
        const result = await stream.finish();
        if (result.status !== "OK") return { code: result.status };
        return { code: result.answers.get(7n) ?? "no answer" };
      }
      case "Health":
        await new Promise<void>((resolve, reject) =>
          raw.makeUnaryRequest(
            "/grpc.health.v1.Health/Check",
            (b: Buffer) => b,
            (b: Buffer) => b,
            Buffer.alloc(0),
            new grpc.Metadata(),
            { deadline: Date.now() + 10_000 },
            (err) => (err ? reject(err) : resolve()),
          ),
        );
        break;
    }
    return { code: "OK" };
  } catch (err) {
    const code = (err as { code?: number }).code;
    return { code: code === undefined ? String(err) : (grpc.status[code] ?? String(code)) };
  }
}

/** Every file of a partition directory with its bytes (empty when it does not exist). */
function onDisk(server: TestServer, partition: string): Map<string, string> {
  const dir = join(server.dataDir, partition);
  const files = new Map<string, string>();
  if (!existsSync(dir)) return files;
  for (const name of readdirSync(dir)) files.set(name, readFileSync(join(dir, name)).toString("hex"));
  return files;
}

interface Caller {
  name: string;
  server: "tokens" | "mtls";
  options(): ClientOptions;
  /** Expected code of a read RPC and of a write RPC on TARGET. */
  read: string;
  write: string;
  /** Names ListPartitions answers (when it answers OK). */
  lists?: string[];
}

let pki: TestPki;
let tokensServer: TestServer;
let mtlsServer: TestServer;
let certs: Record<"granted" | "ungranted", { certPem: Buffer; keyPem: Buffer }>;

before(async () => {
  pki = await createTestPki();
  const tokensFile = join(pki.dir, "tokens.json");
  writeFileSync(tokensFile, JSON.stringify(POLICY));
  certs = {
    granted: pki.issueClient("cert-writer", "/CN=cert-writer", pki.ca),
    ungranted: pki.issueClient("cert-nobody", "/CN=cert-nobody", pki.ca, "DNS:nobody.example"),
  };
  tokensServer = await startTestServer(["--auth-tokens", tokensFile]);
  mtlsServer = await startTestServer([
    "--auth-tokens",
    tokensFile,
    "--tls-cert",
    pki.server.cert,
    "--tls-key",
    pki.server.key,
    "--tls-client-ca",
    pki.ca.cert,
  ]);
  // Seed TARGET on both servers (and an "other-x" partition) with the admin token.
  for (const [server, options] of [
    [tokensServer, { token: TOKENS.admin }],
    [
      mtlsServer,
      {
        token: TOKENS.admin,
        tls: { ca: pki.ca.certPem, cert: certs.ungranted.certPem, key: certs.ungranted.keyPem },
      },
    ],
  ] as const) {
    const admin = new MetadataClient(
      server === tokensServer ? server.address : `localhost:${server.service.port}`,
      options,
    );
    await admin.put(utf8("k"), utf8("v1"), { partition: TARGET });
    await admin.put(utf8("gone"), utf8("x"), { partition: TARGET });
    await admin.put(utf8("o"), utf8("1"), { partition: "other-x" });
    admin.close();
  }
});
after(async () => {
  await tokensServer?.stop();
  await mtlsServer?.stop();
  await pki?.remove();
});

const tls = (cert?: { certPem: Buffer; keyPem: Buffer }) => ({
  ca: pki.ca.certPem,
  cert: cert?.certPem,
  key: cert?.keyPem,
});

const CALLERS: Caller[] = [
  {
    name: "no credentials",
    server: "tokens",
    options: () => ({}),
    read: "UNAUTHENTICATED",
    write: "UNAUTHENTICATED",
  },
  {
    name: "unknown token",
    server: "tokens",
    options: () => ({ token: "tok-unknown" }),
    read: "UNAUTHENTICATED",
    write: "UNAUTHENTICATED",
  },
  {
    name: "read token",
    server: "tokens",
    options: () => ({ token: TOKENS.reader }),
    read: "OK",
    write: "PERMISSION_DENIED",
    lists: [TARGET],
  },
  {
    name: "write token for other partitions",
    server: "tokens",
    options: () => ({ token: TOKENS.otherWriter }),
    read: "PERMISSION_DENIED",
    write: "PERMISSION_DENIED",
    lists: ["other-x"],
  },
  {
    name: "write token",
    server: "tokens",
    options: () => ({ token: TOKENS.writer }),
    read: "OK",
    write: "OK",
    lists: [TARGET],
  },
  {
    name: "admin token",
    server: "tokens",
    options: () => ({ token: TOKENS.admin }),
    read: "OK",
    write: "OK",
    lists: ["other-x", TARGET],
  },
  {
    name: "client certificate with grants",
    server: "mtls",
    options: () => ({ tls: tls(certs.granted) }),
    read: "OK",
    write: "OK",
    lists: [TARGET],
  },
  {
    name: "client certificate without grants",
    server: "mtls",
    options: () => ({ tls: tls(certs.ungranted) }),
    read: "PERMISSION_DENIED",
    write: "PERMISSION_DENIED",
    lists: [],
  },
  {
    name: "certificate without grants and a write token",
    server: "mtls",
    options: () => ({ tls: tls(certs.ungranted), token: TOKENS.writer }),
    read: "OK",
    write: "OK",
    lists: [TARGET],
  },
];

for (const caller of CALLERS) {
  test(`${caller.name}: every RPC answers as granted, and refused calls change nothing`, async () => {
    const server = caller.server === "tokens" ? tokensServer : mtlsServer;
    const address = caller.server === "tokens" ? server.address : `localhost:${server.service.port}`;
    const options = caller.options();
    const client = new MetadataClient(address, options);
    const raw = new grpc.Client(
      address,
      options.tls === undefined
        ? grpc.credentials.createInsecure()
        : grpc.credentials.createSsl(
            options.tls.ca ?? null,
            options.tls.key ?? null,
            options.tls.cert ?? null,
          ),
    );
    try {
      const got: string[] = [];
      const want: string[] = [];
      for (const rpc of RPCS) {
        const expected =
          rpc === "Health"
            ? "OK"
            : rpc === "ListPartitions"
              ? caller.read === "UNAUTHENTICATED"
                ? "UNAUTHENTICATED"
                : "OK"
              : READS.has(rpc)
                ? caller.read
                : caller.write;
        const before = onDisk(server, TARGET);
        const result = await invoke(client, raw, options.token, rpc, TARGET);
        got.push(`${rpc} ${result.code}`);
        want.push(`${rpc} ${expected}`);
        if (result.code !== "OK") {
          assert.deepEqual(
            onDisk(server, TARGET),
            before,
            `${rpc} was refused but changed ${TARGET} on disk`,
          );
        }
        if (rpc === "ListPartitions" && result.names !== undefined) {
          assert.deepEqual(result.names, caller.lists, "ListPartitions answers only the readable names");
        }
        if (caller.name !== "admin token" && rpc !== "ListPartitions" && rpc !== "Health") {
          const fresh = await invoke(client, raw, options.token, rpc, FRESH);
          assert.ok(
            fresh.code === "UNAUTHENTICATED" || fresh.code === "PERMISSION_DENIED",
            `${rpc} on ${FRESH}: ${fresh.code}`,
          );
          assert.equal(existsSync(join(server.dataDir, FRESH)), false, `${rpc} created ${FRESH}`);
        }
      }
      assert.deepEqual(got, want);
    } finally {
      client.close();
      raw.close();
    }
  });
}

test("refusals are counted by reason and audited without tokens", async () => {
  const text = await tokensServer.metrics();
  assert.match(text, /metadata_auth_refused_total\{reason="missing_credentials"\} [1-9]/);
  assert.match(text, /metadata_auth_refused_total\{reason="unknown_token"\} [1-9]/);
  assert.match(text, /metadata_auth_refused_total\{reason="permission_denied"\} [1-9]/);
  for (const token of Object.values(TOKENS)) assert.ok(!text.includes(token));
});

test("the TypeScript client's Write-stream writer carries the token, over plaintext and over TLS", async () => {
  const plain = new MetadataClient(tokensServer.address, { token: TOKENS.writer });
  const overTls = new MetadataClient(`localhost:${mtlsServer.service.port}`, {
    token: TOKENS.writer,
    tls: tls(certs.ungranted),
  });
  try {
    for (const client of [plain, overTls]) {
      const writer = client.writer({ partition: TARGET });
      assert.ok((await writer.put(utf8("wk"), utf8("1"))).version >= 1n);
      await assert.rejects(writer.put(utf8("wk"), utf8("1"), { partition: FRESH }), {
        code: grpc.status.PERMISSION_DENIED,
        details: `permission denied: write access to partition "${FRESH}" is needed`,
      });
      await writer.close();
    }
  } finally {
    plain.close();
    overTls.close();
  }
});
