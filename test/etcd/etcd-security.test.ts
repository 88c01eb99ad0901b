/**
 * The connection to etcd secured: the --etcd-ca-file / --etcd-cert-file / --etcd-key-file and
 * --etcd-username / --etcd-password-file flags, then a server against a real etcd serving client
 * TLS with `--client-cert-auth`, and against a real etcd with user authentication enabled
 * (skipped with the reason when etcd is not installed).
 *
 * What a user relies on: with the right CA, certificate and password the server owns and serves
 * durable writes that a reopened server reads back; with a missing or foreign certificate, a CA
 * that does not verify etcd, or a wrong password, it does not start, says why in one line, and
 * says so within seconds; a rotated password file is used without a restart.
 */
import assert from "node:assert/strict";
import { X509Certificate } from "node:crypto";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { EtcdUnavailableError } from "../../server/cluster/etcd-client.js";
import { ConfigError, parseConfig } from "../../server/config.js";
import { runCli } from "../support/cli-process.js";
import { type EtcdCluster, enableEtcdAuth, etcdMissing, startEtcdCluster } from "../support/etcd-cluster.js";
import { startTestServer } from "../support/in-process-server.js";
import { freePort } from "../support/ports.js";
import { waitUntil } from "../support/rpc-helpers.js";
import { u64, utf8 } from "../support/store-helpers.js";
import { tempDir } from "../support/temp-dir.js";
import { type CertFiles, createTestPki, type TestPki } from "../support/test-pki.js";

const skip = etcdMissing() ?? false;

/** Starting must fail with an EtcdUnavailableError matching `reason`, within `withinMs`. */
async function refusedAtStart(flags: string[], reason: RegExp, withinMs = 8_000): Promise<void> {
  const started = Date.now();
  await assert.rejects(
    startTestServer(flags),
    (err: unknown) => err instanceof EtcdUnavailableError && reason.test(err.message),
  );
  const tookMs = Date.now() - started;
  assert.ok(tookMs < withinMs, `refused after ${tookMs} ms, more than ${withinMs} ms`);
}

test("etcd TLS and auth flags: files read and checked, pairs enforced, only with --storage etcd", async () => {
  const dir = await tempDir("etcd-flags-");
  try {
    const pem = (name: string) => {
      const path = join(dir.path, name);
      writeFileSync(path, `-----BEGIN CERTIFICATE-----\n${name}\n-----END CERTIFICATE-----\n`);
      return path;
    };
    const ca = pem("ca.crt");
    const cert = pem("client.crt");
    const key = pem("client.key");
    const password = join(dir.path, "password");
    writeFileSync(password, "s3cret\n");
    const empty = join(dir.path, "empty");
    writeFileSync(empty, "\n");
    const notPem = join(dir.path, "not-pem");
    writeFileSync(notPem, "hello");
    const missing = join(dir.path, "missing");
    const base = ["--storage", "etcd", "--etcd-endpoints", "e:2379"];
    const parse = (argv: string[], env: NodeJS.ProcessEnv = {}) => parseConfig(argv, env);

    assert.deepEqual(parse([...base, "--etcd-ca-file", ca]).etcd, {
      endpoints: ["e:2379"],
      prefix: "metadata",
      leaseTtlSeconds: 10,
      tls: { caFile: ca },
    });
    assert.deepEqual(
      parse([
        ...base,
        "--etcd-ca-file",
        ca,
        "--etcd-cert-file",
        cert,
        "--etcd-key-file",
        key,
        "--etcd-username",
        "svc",
        "--etcd-password-file",
        password,
      ]).etcd,
      {
        endpoints: ["e:2379"],
        prefix: "metadata",
        leaseTtlSeconds: 10,
        tls: { caFile: ca, client: { certFile: cert, keyFile: key } },
        auth: { username: "svc", passwordFile: password },
      },
    );
    // The password itself is never part of the configuration.
    assert.doesNotMatch(
      JSON.stringify(parse([...base, "--etcd-username", "svc", "--etcd-password-file", password])),
      /s3cret/,
    );
    assert.deepEqual(
      parse([], {
        METADATA_STORAGE: "etcd",
        METADATA_ETCD_ENDPOINTS: "e:1",
        METADATA_ETCD_CA_FILE: ca,
        METADATA_ETCD_CERT_FILE: cert,
        METADATA_ETCD_KEY_FILE: key,
        METADATA_ETCD_USERNAME: "svc",
        METADATA_ETCD_PASSWORD_FILE: password,
      }).etcd,
      {
        endpoints: ["e:1"],
        prefix: "metadata",
        leaseTtlSeconds: 10,
        tls: { caFile: ca, client: { certFile: cert, keyFile: key } },
        auth: { username: "svc", passwordFile: password },
      },
    );

    const refused = (argv: string[], message: RegExp) =>
      assert.throws(
        () => parse(argv),
        (err: unknown) => err instanceof ConfigError && message.test(err.message),
      );
    refused(
      [...base, "--etcd-ca-file", ca, "--etcd-cert-file", cert],
      /--etcd-cert-file and --etcd-key-file go together/,
    );
    refused(
      [...base, "--etcd-ca-file", ca, "--etcd-key-file", key],
      /--etcd-cert-file and --etcd-key-file go together/,
    );
    refused(
      [...base, "--etcd-cert-file", cert, "--etcd-key-file", key],
      /--etcd-cert-file needs --etcd-ca-file/,
    );
    refused([...base, "--etcd-username", "svc"], /--etcd-username needs --etcd-password-file/);
    refused([...base, "--etcd-password-file", password], /--etcd-password-file needs --etcd-username/);
    refused([...base, "--etcd-ca-file", missing], /--etcd-ca-file: cannot read .*missing: ENOENT/);
    refused([...base, "--etcd-ca-file", dir.path], /--etcd-ca-file: cannot read .*: EISDIR/);
    refused([...base, "--etcd-ca-file", notPem], /--etcd-ca-file: .*not-pem is not PEM/);
    refused(
      [...base, "--etcd-ca-file", ca, "--etcd-cert-file", cert, "--etcd-key-file", missing],
      /--etcd-key-file: cannot read .*: ENOENT/,
    );
    refused(
      [...base, "--etcd-username", "svc", "--etcd-password-file", missing],
      /--etcd-password-file: cannot use .*missing: ENOENT/,
    );
    refused(
      [...base, "--etcd-username", "svc", "--etcd-password-file", empty],
      /--etcd-password-file: .*it is empty/,
    );
    refused(["--etcd-ca-file", ca], /--etcd-ca-file.* go with --storage etcd/);
    refused(["--etcd-username", "svc", "--etcd-password-file", password], /go with --storage etcd/);
  } finally {
    await dir.remove();
  }
});

test("an etcd endpoint nobody listens on stops the start at once, saying so", async () => {
  const endpoint = `127.0.0.1:${await freePort()}`;
  await refusedAtStart(
    ["--storage", "etcd", "--etcd-endpoints", endpoint],
    /^etcd at http:\/\/127\.0\.0\.1:\d+: cannot reach etcd \(14 UNAVAILABLE: /,
  );
});

describe("etcd over mutual TLS", { skip }, () => {
  let pki: TestPki;
  let cluster: EtcdCluster;
  let client: CertFiles;
  let stranger: CertFiles;
  let tlsFlags: (prefix: string) => string[];

  before(async () => {
    pki = await createTestPki();
    client = pki.issueClient("metadata-server", "/CN=metadata-server", pki.ca);
    stranger = pki.issueClient("stranger", "/CN=metadata-server", pki.otherCa);
    cluster = await startEtcdCluster(1, {
      tls: {
        caFile: pki.ca.cert,
        certFile: pki.server.cert,
        keyFile: pki.server.key,
        clientCertAuth: true,
        client: { certFile: client.cert, keyFile: client.key },
      },
    });
    tlsFlags = (prefix) => [
      "--storage",
      "etcd",
      "--etcd-endpoints",
      cluster.endpoints.join(","),
      "--etcd-prefix",
      prefix,
      "--etcd-ca-file",
      pki.ca.cert,
    ];
  });
  after(async () => {
    await cluster?.stop();
    await pki?.remove();
  });

  test("with the CA and a client certificate: durable writes, read back by a reopened server", async () => {
    const flags = [...tlsFlags("tls"), "--etcd-cert-file", client.cert, "--etcd-key-file", client.key];
    const first = await startTestServer(flags);
    await waitUntil(() => first.service.ownership?.current === "owner", "first owns", 10_000);
    // The client certificate's expiry is exported for alerts, though it is read only at start.
    const notAfter = Math.floor(Date.parse(new X509Certificate(client.certPem).validTo) / 1000);
    assert.match(
      await first.metrics(),
      new RegExp(
        `^metadata_tls_certificate_expiry_timestamp_seconds\\{use="etcd-client"\\} ${notAfter}$`,
        "m",
      ),
    );
    await Promise.all(
      Array.from({ length: 20 }, (_, i) =>
        first.client.put(u64(i), utf8(`value ${i}`), { partition: "tls" }),
      ),
    );
    await first.stop();
    // Landed in etcd, under the prefix, over TLS.
    const keys = await cluster.client().getAll().prefix("tls/").keys();
    assert.ok(
      keys.includes("tls/tls/6c656674/length") || keys.includes("tls/tls/7269676874/length"),
      keys.join("\n"),
    );

    const second = await startTestServer(flags);
    try {
      await waitUntil(() => second.service.ownership?.current === "owner", "second owns", 10_000);
      for (let i = 0; i < 20; i++) {
        const value = await second.client.get(u64(i), { partition: "tls" });
        assert.equal(Buffer.from(value ?? []).toString(), `value ${i}`);
      }
    } finally {
      await second.stop();
    }
  });

  test("without a client certificate, or with one from another CA, the server does not start and says why", async () => {
    await refusedAtStart(
      tlsFlags("tls"),
      /requires a client certificate: give --etcd-cert-file and --etcd-key-file/,
    );
    await refusedAtStart(
      [...tlsFlags("tls"), "--etcd-cert-file", stranger.cert, "--etcd-key-file", stranger.key],
      /refused this server's client certificate/,
    );
    // The CA given does not verify etcd's server certificate.
    await refusedAtStart(
      [
        ...tlsFlags("tls").slice(0, -1),
        pki.otherCa.cert,
        "--etcd-cert-file",
        client.cert,
        "--etcd-key-file",
        client.key,
      ],
      /server certificate is not verified by --etcd-ca-file/,
    );
    // Plain gRPC to a TLS etcd.
    await refusedAtStart(tlsFlags("tls").slice(0, -2), /cannot reach etcd/);
    // As a process: one line on stderr, exit status 1, within seconds.
    const run = await runCli(["serve", "--listen", "127.0.0.1:0", ...tlsFlags("tls")], { timeoutMs: 30_000 });
    assert.equal(run.code, 1, run.stderr);
    assert.match(
      run.stderr,
      /^error: etcd at https:\/\/127\.0\.0\.1:\d+: etcd requires a client certificate: give --etcd-cert-file and --etcd-key-file \(.*bad certificate.*\)$/m,
    );
    assert.doesNotMatch(run.stdout, /listening/);
  });

  // Last in this suite: it turns authentication on for the rest of the cluster's life.
  test("with authentication enabled, the client certificate's CN is the etcd user", async () => {
    await enableEtcdAuth(cluster, "root password", [
      { name: "metadata-server", password: "unused", prefix: "cn" },
    ]);
    const certFlags = ["--etcd-cert-file", client.cert, "--etcd-key-file", client.key];
    const server = await startTestServer([...tlsFlags("cn"), ...certFlags]);
    try {
      await waitUntil(() => server.service.ownership?.current === "owner", "owns", 10_000);
      await server.client.put(u64(1), utf8("by certificate"), { partition: "cn" });
    } finally {
      await server.stop();
    }
    // The same user has no rights on another prefix.
    await refusedAtStart(
      [...tlsFlags("tls"), ...certFlags],
      /etcd denied access to tls\/: it has authentication enabled and takes the client certificate's CN as the user/,
    );
  });
});

describe("etcd with user authentication", { skip }, () => {
  let cluster: EtcdCluster;
  let dir: { path: string; remove(): Promise<void> };
  let passwordFile: string;
  let authFlags: (user: string, file: string) => string[];

  before(async () => {
    dir = await tempDir("etcd-auth-");
    passwordFile = join(dir.path, "svc.password");
    writeFileSync(passwordFile, "first password\n");
    cluster = await startEtcdCluster(1);
    await enableEtcdAuth(cluster, "root password", [
      { name: "svc", password: "first password", prefix: "auth" },
      { name: "elsewhere", password: "first password", prefix: "other" },
    ]);
    authFlags = (user, file) => [
      "--storage",
      "etcd",
      "--etcd-endpoints",
      cluster.endpoints.join(","),
      "--etcd-prefix",
      "auth",
      "--etcd-username",
      user,
      "--etcd-password-file",
      file,
    ];
  });
  after(async () => {
    await cluster?.stop();
    await dir?.remove();
  });

  test("the right password serves; a rotated password file is used without a restart", async () => {
    const server = await startTestServer(authFlags("svc", passwordFile));
    try {
      await waitUntil(() => server.service.ownership?.current === "owner", "owns", 10_000);
      await server.client.put(u64(1), utf8("v1"), { partition: "auth" });
      // Rotation: the new password goes to the file first, then to etcd, which invalidates the
      // server's token; its next call logs in again with the file's new password.
      writeFileSync(passwordFile, "second password\n");
      await cluster.client().user("svc").setPassword("second password");
      await server.client.put(u64(2), utf8("v2"), { partition: "auth" });
      assert.equal(server.service.ownership?.current, "owner");
      // The other order: etcd first. Writes fail, saying why, and nothing is acknowledged, until
      // the file holds the new password; ownership is kept meanwhile.
      await cluster.client().user("svc").setPassword("third password");
      await assert.rejects(server.client.put(u64(3), utf8("v3"), { partition: "auth" }), (err: unknown) => {
        const e = err as { code?: number; message?: string };
        return e.code === 14 && /not committed.*authentication failed/.test(e.message ?? "");
      });
      writeFileSync(passwordFile, "third password\n");
      // The failed sync reloads the partition from etcd, which failed too; it is retried a
      // second later (group-commit.ts), so the first writes after the fix may still be refused.
      const deadline = Date.now() + 5_000;
      for (;;) {
        try {
          await server.client.put(u64(4), utf8("v4"), { partition: "auth" });
          break;
        } catch (err) {
          if (Date.now() > deadline) throw err;
          await new Promise((resolve) => setTimeout(resolve, 100));
        }
      }
      assert.equal(server.service.ownership?.current, "owner");
      const stored = await cluster.client().getAll().prefix("auth/auth/").keys();
      assert.ok(stored.length > 0, "the writes are in etcd under the user's prefix");
    } finally {
      await server.stop();
    }
    // A reopened server logs in with the new password and reads both writes back.
    const reopened = await startTestServer(authFlags("svc", passwordFile));
    try {
      await waitUntil(() => reopened.service.ownership?.current === "owner", "reopened owns", 10_000);
      const read = async (key: number) => {
        const value = await reopened.client.get(u64(key), { partition: "auth" });
        return value === undefined ? undefined : Buffer.from(value).toString();
      };
      assert.deepEqual(
        [await read(1), await read(2), await read(3), await read(4)],
        ["v1", "v2", undefined, "v4"],
      );
    } finally {
      await reopened.stop();
    }
  });

  test("a wrong password, no user, or a user without rights on the prefix fails at start, saying why", async () => {
    const wrong = join(dir.path, "wrong.password");
    writeFileSync(wrong, "not the password\n");
    await refusedAtStart(
      authFlags("svc", wrong),
      /etcd refused the login of user "svc": check --etcd-username and --etcd-password-file \(.*authentication failed/,
    );
    await refusedAtStart(
      authFlags("svc", wrong).slice(0, -4),
      /it has authentication enabled, give --etcd-username/,
    );
    const elsewhere = join(dir.path, "elsewhere.password");
    writeFileSync(elsewhere, "first password\n");
    await refusedAtStart(
      authFlags("elsewhere", elsewhere),
      /etcd denied user "elsewhere" access to auth\/: grant its role readwrite/,
    );
  });
});
