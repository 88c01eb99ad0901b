/**
 * A throwaway PKI for mutual-TLS tests, made by `openssl` in a temporary directory: two CAs, a
 * server certificate for localhost / 127.0.0.1 signed by the first, and more server or client
 * certificates signed by either. P-256 keys, so generating everything takes a fraction of a second.
 */
import { execFileSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { tempDir } from "./temp-dir.js";

/** PEM files of one certificate and its key. */
export interface CertFiles {
  cert: string;
  key: string;
  /** Contents, for clients that take bytes. */
  certPem: Buffer;
  keyPem: Buffer;
}

/** A generated PKI; `remove()` deletes its directory. */
export interface TestPki {
  dir: string;
  /** The CA the server trusts for clients and that signs the server certificate. */
  ca: CertFiles;
  /** A CA nobody trusts. */
  otherCa: CertFiles;
  server: CertFiles;
  /** Issues a client certificate with `subject` (e.g. "/CN=ops") and optional SANs, signed by `by`. */
  issueClient(name: string, subject: string, by: CertFiles, subjectAltNames?: string): CertFiles;
  /** Issues another server certificate for localhost / 127.0.0.1, signed by `by`. */
  issueServer(name: string, by: CertFiles): CertFiles;
  remove(): Promise<void>;
}

function openssl(dir: string, args: string[]): void {
  execFileSync("openssl", args, { cwd: dir, stdio: ["ignore", "ignore", "pipe"] });
}

function files(dir: string, name: string): CertFiles {
  const cert = join(dir, `${name}.crt`);
  const key = join(dir, `${name}.key`);
  return { cert, key, certPem: readFileSync(cert), keyPem: readFileSync(key) };
}

const EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];

/** Generates the PKI described in the module comment. */
export async function createTestPki(): Promise<TestPki> {
  const tmp = await tempDir("metadata-pki-");
  const dir = tmp.path;
  const makeCa = (name: string, subject: string): CertFiles => {
    openssl(dir, [
      "req",
      "-x509",
      ...EC,
      "-keyout",
      `${name}.key`,
      "-out",
      `${name}.crt`,
      "-days",
      "2",
      "-subj",
      subject,
    ]);
    return files(dir, name);
  };
  const issue = (name: string, subject: string, by: CertFiles, extensions: string): CertFiles => {
    writeFileSync(join(dir, `${name}.ext`), extensions);
    openssl(dir, ["req", ...EC, "-keyout", `${name}.key`, "-out", `${name}.csr`, "-subj", subject]);
    openssl(dir, [
      "x509",
      "-req",
      "-in",
      `${name}.csr`,
      "-CA",
      by.cert,
      "-CAkey",
      by.key,
      "-CAcreateserial",
      "-out",
      `${name}.crt`,
      "-days",
      "2",
      "-extfile",
      `${name}.ext`,
    ]);
    return files(dir, name);
  };
  const ca = makeCa("ca", "/CN=metadata test CA");
  const otherCa = makeCa("other-ca", "/CN=another CA");
  const issueServer = (name: string, by: CertFiles): CertFiles =>
    issue(
      name,
      "/CN=localhost",
      by,
      "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    );
  const server = issueServer("server", ca);
  return {
    dir,
    ca,
    otherCa,
    server,
    issueClient: (name, subject, by, subjectAltNames) =>
      issue(
        name,
        subject,
        by,
        `extendedKeyUsage=clientAuth\n${subjectAltNames === undefined ? "" : `subjectAltName=${subjectAltNames}\n`}`,
      ),
    issueServer,
    remove: tmp.remove,
  };
}
