/**
 * TlsFiles on its own: the one-line reasons a file set is refused (at open, and on reload, where
 * the material in use stays), and the provider contract grpc-js relies on: a listener gets the
 * current material once added, then each accepted reload, and nothing after removal.
 */
import assert from "node:assert/strict";
import { copyFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { TlsFiles, TlsFilesError } from "../server/tls-files.js";
import { createTestPki, type TestPki } from "./support/test-pki.js";

let pki: TestPki;
before(async () => {
  pki = await createTestPki();
});
after(async () => {
  await pki?.remove();
});

test("open refuses a missing file, a file without a certificate, a key of another certificate, a bad CA bundle", () => {
  const refused = (paths: Parameters<typeof TlsFiles.open>[0], message: RegExp) =>
    assert.throws(
      () => TlsFiles.open(paths),
      (err: unknown) =>
        err instanceof TlsFilesError && message.test(err.message) && !err.message.includes("\n"),
    );
  const { cert, key } = pki.server;
  refused({ certFile: join(pki.dir, "absent.crt"), keyFile: key }, /^cannot read \S+absent\.crt: ENOENT$/);
  refused({ certFile: key, keyFile: key }, /^\S+server\.key holds no PEM certificate$/);
  refused({ certFile: cert, keyFile: cert }, /^\S+server\.crt is not a usable PEM private key: /);
  refused(
    { certFile: cert, keyFile: pki.ca.key },
    /^\S+ca\.key is not the key of the certificate in \S+server\.crt$/,
  );
  refused({ certFile: cert, keyFile: key, caFile: key }, /^\S+server\.key holds no PEM certificate$/);
  assert.deepEqual(
    TlsFiles.open({ certFile: cert, keyFile: key, caFile: pki.ca.cert }).current.ca,
    pki.ca.certPem,
  );
});

test("listeners get the material in use once added, then each accepted reload; a refused reload changes nothing", async () => {
  const certFile = join(pki.dir, "unit.crt");
  const keyFile = join(pki.dir, "unit.key");
  copyFileSync(pki.server.cert, certFile);
  copyFileSync(pki.server.key, keyFile);
  const files = TlsFiles.open({ certFile, keyFile, caFile: pki.ca.cert });
  const seen: string[] = [];
  const identity = (update: { certificate: Buffer } | null) =>
    seen.push(update?.certificate.toString() ?? "null");
  const cas: number[] = [];
  const ca = (update: { caCertificate: Buffer } | null) => cas.push(update?.caCertificate.length ?? -1);
  files.addIdentityCertificateListener(identity);
  files.addCaCertificateListener(ca);
  await Promise.resolve();
  assert.deepEqual(seen, [pki.server.certPem.toString()]);
  assert.deepEqual(cas, [pki.ca.certPem.length]);

  const other = pki.issueServer("unit-other", pki.otherCa);
  copyFileSync(other.cert, certFile);
  assert.match(files.reload() ?? "", /unit\.key is not the key of the certificate in \S+unit\.crt/);
  assert.equal(files.current.certificate.toString(), pki.server.certPem.toString());
  assert.equal(seen.length, 1);
  copyFileSync(other.key, keyFile);
  assert.equal(files.reload(), undefined);
  assert.deepEqual(seen, [pki.server.certPem.toString(), other.certPem.toString()]);
  assert.equal(cas.length, 2);

  files.removeIdentityCertificateListener(identity);
  writeFileSync(certFile, other.certPem);
  assert.equal(files.reload(), undefined);
  assert.equal(seen.length, 2);
});
