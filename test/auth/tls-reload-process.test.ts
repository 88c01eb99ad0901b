/**
 * Certificate rotation through the path operators use: the server as a child process, new files
 * put in place, then SIGHUP. New connections get the new certificate, a connection opened before
 * carries on, a key that does not match is refused (logged, counted, the certificate in use
 * stays), and a start with such a key stops with one line.
 */
import assert from "node:assert/strict";
import { copyFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { credentials, status } from "@grpc/grpc-js";
import { MetadataClient } from "../../clients/ts/metadata-client.js";
import { ServerProcess } from "../e2e/server-process.js";
import { utf8 } from "../support/store-helpers.js";
import { type CertFiles, createTestPki, type TestPki } from "../support/test-pki.js";

let pki: TestPki;
let rotated: CertFiles;
let certFile: string;
let keyFile: string;
let server: ServerProcess;
const clients: MetadataClient[] = [];

before(async () => {
  pki = await createTestPki();
  rotated = pki.issueServer("rotated-server", pki.otherCa);
  certFile = join(pki.dir, "grpc.crt");
  keyFile = join(pki.dir, "grpc.key");
  copyFileSync(pki.server.cert, certFile);
  copyFileSync(pki.server.key, keyFile);
  server = await ServerProcess.start({
    dataDir: join(pki.dir, "data"),
    flags: ["--tls-cert", certFile, "--tls-key", keyFile],
  });
});
after(async () => {
  for (const client of clients) client.close();
  await server?.stop();
  await pki?.remove();
});

function trusting(ca: CertFiles): MetadataClient {
  const client = new MetadataClient(server.address, { credentials: credentials.createSsl(ca.certPem) });
  clients.push(client);
  return client;
}

/** Resolves once the server's output matches `pattern` `times` times (at most 10 s). */
async function logged(pattern: RegExp, times = 1): Promise<void> {
  const deadline = Date.now() + 10_000;
  const count = () => server.output().match(new RegExp(pattern, "g"))?.length ?? 0;
  while (count() < times) {
    if (Date.now() > deadline) assert.fail(`no ${pattern} in the server output:\n${server.output()}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

test("SIGHUP: new connections get the new certificate, an open one carries on, a mismatched key is refused", async () => {
  const before = trusting(pki.ca);
  await before.put(utf8("k"), utf8("1"), { deadlineMs: 10_000 });
  await assert.rejects(trusting(pki.otherCa).get(utf8("k"), { deadlineMs: 5_000 }), {
    code: status.UNAVAILABLE,
  });

  copyFileSync(rotated.cert, certFile);
  copyFileSync(rotated.key, keyFile);
  server.signal("SIGHUP");
  await logged(/tls: reloaded the grpc certificate from \S+grpc\.crt, valid until \S+Z\n/);
  await trusting(pki.otherCa).put(utf8("k"), utf8("2"), { deadlineMs: 10_000 });
  // Trusts only the old CA: it could not reconnect, so this call rides the connection opened before.
  assert.equal(Buffer.from((await before.get(utf8("k"), { deadlineMs: 10_000 })) ?? []).toString(), "2");

  copyFileSync(pki.server.key, keyFile);
  server.signal("SIGHUP");
  await logged(/tls: keeping the previous grpc certificate: \S+grpc\.key is not the key of the certificate/);
  await trusting(pki.otherCa).put(utf8("k"), utf8("3"), { deadlineMs: 10_000 });
  const metrics = await (await fetch(`http://127.0.0.1:${server.metricsPort}/metrics`)).text();
  assert.match(metrics, /^metadata_tls_reloads_total\{use="grpc",result="ok"\} 1$/m);
  assert.match(metrics, /^metadata_tls_reloads_total\{use="grpc",result="failed"\} 1$/m);
});

test("a key that does not match the certificate stops the start with one line", async () => {
  await assert.rejects(
    ServerProcess.start({
      dataDir: join(pki.dir, "data-2"),
      flags: ["--tls-cert", pki.server.cert, "--tls-key", rotated.key],
    }),
    (err: Error) => {
      assert.match(err.message, /"code":1/);
      assert.match(
        err.message,
        /--- server stderr ---\n(?:\.\.\.)?error: \S+rotated-server\.key is not the key of the certificate in \S+server\.crt\n$/,
      );
      return true;
    },
  );
});
