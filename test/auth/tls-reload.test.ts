/**
 * Certificate rotation without a restart, over real TLS on 127.0.0.1: `reload()` (what SIGHUP
 * calls) serves new connections of the gRPC port and of the HTTPS metrics endpoint with the new
 * certificate, while connections and streams opened before carry on; a bad new file (garbage, a
 * key that does not match) keeps the certificate in use and counts `result="failed"`; with mutual
 * TLS, a client CA added to the bundle is trusted from the reload on, and certificate identities
 * still hold grants. The expiry gauge reads the notAfter of the certificate in use.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { X509Certificate } from "node:crypto";
import { copyFileSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { connect } from "node:tls";
import { credentials, status } from "@grpc/grpc-js";
import { MetadataClient } from "../../clients/ts/metadata-client.js";
import { startTestServer, type TestServer } from "../support/in-process-server.js";
import { utf8 } from "../support/store-helpers.js";
import { type CertFiles, createTestPki, type TestPki } from "../support/test-pki.js";

let pki: TestPki;
/** A server certificate signed by the other CA: what the server rotates to. */
let rotated: CertFiles;

before(async () => {
  pki = await createTestPki();
  rotated = pki.issueServer("rotated-server", pki.otherCa);
});
after(async () => {
  await pki?.remove();
});

/** SHA-256 fingerprint of a PEM certificate, as Node's getPeerCertificate spells it. */
const fingerprint = (pem: Buffer) => new X509Certificate(pem).fingerprint256;

/** notAfter of a certificate file in unix seconds, read by openssl. */
function opensslNotAfter(path: string): number {
  const text = execFileSync("openssl", ["x509", "-noout", "-enddate", "-in", path], { encoding: "utf8" });
  return Math.floor(Date.parse(text.replace(/^notAfter=/, "").trim()) / 1000);
}

/** Fingerprint of the certificate a fresh TLS connection to `port` is served (not verified). */
async function servedFingerprint(port: number, alpn: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect({
      host: "127.0.0.1",
      port,
      servername: "localhost",
      rejectUnauthorized: false,
      ALPNProtocols: alpn,
    });
    socket.once("secureConnect", () => {
      resolve(socket.getPeerCertificate().fingerprint256);
      socket.destroy();
    });
    socket.once("error", reject);
  });
}

function install(from: CertFiles, cert: string, key: string): void {
  copyFileSync(from.cert, cert);
  copyFileSync(from.key, key);
}

/** The value of one metric series in a /metrics text, or undefined. */
function sample(text: string, series: string): number | undefined {
  const line = text.split("\n").find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

/** /metrics over HTTPS, trusting any certificate (the test checks which one separately). */
async function scrape(port: number | undefined): Promise<string> {
  const { request } = await import("node:https");
  return new Promise((resolve, reject) => {
    const req = request({ host: "127.0.0.1", port, path: "/metrics", rejectUnauthorized: false }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (chunk: string) => {
        body += chunk;
      });
      res.on("end", () => resolve(body));
    });
    req.on("error", reject);
    req.end();
  });
}

describe("server TLS: rotation of the gRPC and metrics certificates", () => {
  let server: TestServer;
  let grpcCert: string;
  let grpcKey: string;
  let metricsCert: string;
  let metricsKey: string;
  const clients: MetadataClient[] = [];
  const trusting = (ca: CertFiles) => {
    const client = new MetadataClient(`127.0.0.1:${server.service.port}`, {
      credentials: credentials.createSsl(ca.certPem),
    });
    clients.push(client);
    return client;
  };

  before(async () => {
    grpcCert = join(pki.dir, "grpc.crt");
    grpcKey = join(pki.dir, "grpc.key");
    metricsCert = join(pki.dir, "metrics.crt");
    metricsKey = join(pki.dir, "metrics.key");
    install(pki.server, grpcCert, grpcKey);
    install(pki.server, metricsCert, metricsKey);
    server = await startTestServer([
      "--tls-cert",
      grpcCert,
      "--tls-key",
      grpcKey,
      "--metrics-tls-cert",
      metricsCert,
      "--metrics-tls-key",
      metricsKey,
    ]);
  });
  after(async () => {
    for (const client of clients) client.close();
    await server?.stop();
  });

  test("the expiry gauge is the notAfter of the certificate in use", async () => {
    const text = await scrape(server.service.metricsPort);
    const expected = opensslNotAfter(pki.server.cert);
    assert.equal(sample(text, 'metadata_tls_certificate_expiry_timestamp_seconds{use="grpc"}'), expected);
    assert.equal(sample(text, 'metadata_tls_certificate_expiry_timestamp_seconds{use="metrics"}'), expected);
  });

  test("gRPC: new connections get the new certificate after reload; open ones and their streams carry on", async () => {
    const port = server.service.port;
    assert.equal(await servedFingerprint(port, ["h2"]), fingerprint(pki.server.certPem));
    // Trusts only the CA of the certificate in use: any reconnection after the rotation would fail.
    const before = trusting(pki.ca);
    await before.put(utf8("k"), utf8("1"), { partition: "tls" });
    const watch = before.watch({ partition: "tls", includeValues: true })[Symbol.asyncIterator]();
    const first = watch.next();
    await before.put(utf8("k"), utf8("2"), { partition: "tls" });
    assert.equal((await first).done, false);

    // Trusts only the new certificate's CA: refused before the reload.
    const early = trusting(pki.otherCa);
    await assert.rejects(early.get(utf8("k"), { partition: "tls", deadlineMs: 5_000 }), {
      code: status.UNAVAILABLE,
    });

    install(rotated, grpcCert, grpcKey);
    server.service.reload();
    assert.equal(await servedFingerprint(port, ["h2"]), fingerprint(rotated.certPem));
    const after = trusting(pki.otherCa);
    await after.put(utf8("k"), utf8("3"), { partition: "tls" });
    // The connection opened before the reload: its stream sees the new write, and a new call works.
    const next = await watch.next();
    assert.equal(next.done, false);
    assert.equal(Buffer.from(next.value?.events[0]?.value ?? []).toString(), "3");
    assert.equal(Buffer.from((await before.get(utf8("k"), { partition: "tls" })) ?? []).toString(), "3");
    await watch.return?.(undefined);

    const text = await scrape(server.service.metricsPort);
    assert.equal(sample(text, 'metadata_tls_reloads_total{use="grpc",result="ok"}'), 1);
    assert.equal(
      sample(text, 'metadata_tls_certificate_expiry_timestamp_seconds{use="grpc"}'),
      opensslNotAfter(rotated.cert),
    );
  });

  test("gRPC: a garbage certificate or a key that does not match keeps the certificate in use", async () => {
    const port = server.service.port;
    const inUse = await servedFingerprint(port, ["h2"]);
    writeFileSync(
      grpcCert,
      "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n",
    );
    server.service.reload();
    assert.equal(await servedFingerprint(port, ["h2"]), inUse);
    // The first CA's certificate with the rotated certificate's key.
    copyFileSync(pki.server.cert, grpcCert);
    copyFileSync(rotated.key, grpcKey);
    server.service.reload();
    assert.equal(await servedFingerprint(port, ["h2"]), inUse);
    const client = trusting(pki.otherCa);
    await client.put(utf8("still"), utf8("served"), { partition: "tls", deadlineMs: 10_000 });

    const text = await scrape(server.service.metricsPort);
    assert.equal(sample(text, 'metadata_tls_reloads_total{use="grpc",result="failed"}'), 2);
    assert.equal(
      sample(text, 'metadata_tls_certificate_expiry_timestamp_seconds{use="grpc"}'),
      opensslNotAfter(rotated.cert),
    );
    install(rotated, grpcCert, grpcKey);
  });

  test("metrics: the HTTPS endpoint serves the new certificate after reload, and keeps it on a bad key", async () => {
    const port = server.service.metricsPort as number;
    const count = async (result: string) =>
      sample(await scrape(port), `metadata_tls_reloads_total{use="metrics",result="${result}"}`) ?? 0;
    const [okBefore, failedBefore] = [await count("ok"), await count("failed")];
    assert.equal(await servedFingerprint(port, ["http/1.1"]), fingerprint(pki.server.certPem));
    install(rotated, metricsCert, metricsKey);
    server.service.reload();
    assert.equal(await servedFingerprint(port, ["http/1.1"]), fingerprint(rotated.certPem));
    copyFileSync(pki.server.key, metricsKey);
    server.service.reload();
    assert.equal(await servedFingerprint(port, ["http/1.1"]), fingerprint(rotated.certPem));

    assert.equal(await count("ok"), okBefore + 1);
    assert.equal(await count("failed"), failedBefore + 1);
    assert.equal(
      sample(await scrape(port), 'metadata_tls_certificate_expiry_timestamp_seconds{use="metrics"}'),
      opensslNotAfter(rotated.cert),
    );
  });
});

describe("mutual TLS: the client-CA bundle reloads", () => {
  let server: TestServer;
  let caBundle: string;
  const clients: MetadataClient[] = [];
  const withCertificate = (pair: CertFiles) => {
    const client = new MetadataClient(`127.0.0.1:${server.service.port}`, {
      credentials: credentials.createSsl(pki.ca.certPem, pair.keyPem, pair.certPem),
    });
    clients.push(client);
    return client;
  };

  before(async () => {
    caBundle = join(pki.dir, "client-ca.pem");
    copyFileSync(pki.ca.cert, caBundle);
    const tokens = join(pki.dir, "tokens.json");
    writeFileSync(
      tokens,
      JSON.stringify({
        tokens: [
          { name: "reader", client_cert: "CN=new-ca-reader", grants: [{ partitions: "*", access: "read" }] },
          { name: "writer", client_cert: "CN=old-ca-writer", grants: [{ partitions: "*", access: "write" }] },
        ],
      }),
    );
    server = await startTestServer([
      "--tls-cert",
      pki.server.cert,
      "--tls-key",
      pki.server.key,
      "--tls-client-ca",
      caBundle,
      "--auth-tokens",
      tokens,
    ]);
  });
  after(async () => {
    for (const client of clients) client.close();
    await server?.stop();
  });

  test("a client certificate from a CA added by the reload is accepted only after it, under its identity", async () => {
    const writer = withCertificate(pki.issueClient("old-ca-writer", "/CN=old-ca-writer", pki.ca));
    await writer.put(utf8("k"), utf8("v"), { deadlineMs: 10_000 });
    const pair = pki.issueClient("new-ca-reader", "/CN=new-ca-reader", pki.otherCa);
    const early = withCertificate(pair);
    await assert.rejects(early.get(utf8("k"), { deadlineMs: 5_000 }), { code: status.UNAVAILABLE });

    writeFileSync(caBundle, Buffer.concat([readFileSync(pki.ca.cert), readFileSync(pki.otherCa.cert)]));
    server.service.reload();
    const reader = withCertificate(pair);
    assert.equal(Buffer.from((await reader.get(utf8("k"), { deadlineMs: 10_000 })) ?? []).toString(), "v");
    // The certificate's identity decides: read access only.
    await assert.rejects(reader.put(utf8("k"), utf8("w"), { deadlineMs: 10_000 }), {
      code: status.PERMISSION_DENIED,
    });
    // The connection opened before the reload carries on.
    await writer.put(utf8("k"), utf8("w"), { deadlineMs: 10_000 });
  });

  test("a bundle that does not parse keeps the CAs in use; a CA dropped from it is refused for new connections", async () => {
    writeFileSync(caBundle, "not a certificate bundle\n");
    server.service.reload();
    const pair = pki.issueClient("new-ca-reader-2", "/CN=new-ca-reader", pki.otherCa);
    assert.ok((await withCertificate(pair).get(utf8("k"), { deadlineMs: 10_000 })) !== undefined);

    copyFileSync(pki.ca.cert, caBundle);
    server.service.reload();
    await assert.rejects(withCertificate(pair).get(utf8("k"), { deadlineMs: 5_000 }), {
      code: status.UNAVAILABLE,
    });
    const text = await server.metrics();
    assert.equal(sample(text, 'metadata_tls_reloads_total{use="grpc",result="ok"}'), 2);
    assert.equal(sample(text, 'metadata_tls_reloads_total{use="grpc",result="failed"}'), 1);
  });
});
