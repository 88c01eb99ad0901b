/**
 * TLS files: a certificate chain, its private key and, for mutual TLS, a client-CA bundle, read
 * from PEM files at start and again on `reload()` (SIGHUP), so certificates rotate without a
 * restart. `TlsFiles` is also a grpc-js `CertificateProvider`: give it to
 * `experimental.createCertificateProviderServerCredentials` (see `serverCredentials`).
 *
 * Invariants:
 * - Material is only ever replaced by a complete, checked set: every file reads, the chain and
 *   the bundle hold at least one certificate each and parse, the key parses and matches the
 *   chain's first (leaf) certificate, and Node builds a secure context from them. Otherwise the
 *   previous material stays in use and `reload()` returns the reason; at start (`open`) a bad
 *   set throws a `TlsFilesError` with a one-line message, so the server does not start.
 * - A listener gets the current material right after it is added, in a microtask (grpc-js
 *   builds its secure context from that first update, and registers the watcher it feeds only
 *   after adding the listener), and every later accepted set; it never gets null.
 * - New material applies to new TLS connections only: a connection keeps the context it was
 *   made with, so open connections and their calls carry on untouched through a reload.
 * - `notAfter` is that of the leaf certificate in use.
 *
 * Usage:
 *   const files = TlsFiles.open({ certFile, keyFile, caFile });
 *   const credentials = files.serverCredentials();
 *   process.on("SIGHUP", () => console.log(files.reload() ?? "reloaded"));
 */
import { createPrivateKey, X509Certificate } from "node:crypto";
import { readFileSync } from "node:fs";
import { createSecureContext } from "node:tls";
import { experimental, type ServerCredentials } from "@grpc/grpc-js";
import { Counter, Gauge, type Registry } from "prom-client";

/** A TLS file set that cannot be used; the message is one line naming the file and why. */
export class TlsFilesError extends Error {
  override readonly name = "TlsFilesError";
}

/** Paths of one TLS file set. */
export interface TlsFilePaths {
  /** PEM certificate chain, leaf first. */
  certFile: string;
  /** PEM private key of the leaf certificate. */
  keyFile: string;
  /** PEM bundle of the CAs that sign client certificates (mutual TLS); absent: none asked for. */
  caFile?: string | undefined;
}

/** One checked set of TLS material. */
export interface TlsMaterial {
  certificate: Buffer;
  privateKey: Buffer;
  /** Client-CA bundle, when the set has one. */
  ca: Buffer | undefined;
  /** Expiry of the leaf certificate. */
  notAfter: Date;
}

const PEM_CERTIFICATE = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g;

/** The first line of an error's message. */
function reason(err: unknown): string {
  const code = (err as NodeJS.ErrnoException).code;
  if (typeof code === "string" && code.startsWith("E") && !code.startsWith("ERR_")) return code;
  return (err instanceof Error ? err.message : String(err)).split("\n")[0] as string;
}

function readFile(path: string): Buffer {
  try {
    return readFileSync(path);
  } catch (err) {
    throw new TlsFilesError(`cannot read ${path}: ${reason(err)}`);
  }
}

/** Every certificate of a PEM file. @throws TlsFilesError when there is none or one does not parse */
function certificates(path: string, pem: Buffer): X509Certificate[] {
  const blocks = pem.toString("latin1").match(PEM_CERTIFICATE) ?? [];
  if (blocks.length === 0) throw new TlsFilesError(`${path} holds no PEM certificate`);
  return blocks.map((block) => {
    try {
      return new X509Certificate(block);
    } catch (err) {
      throw new TlsFilesError(`${path}: a certificate does not parse: ${reason(err)}`);
    }
  });
}

/**
 * Reads and checks one TLS file set (see the module comment for the checks).
 * @throws TlsFilesError naming the file and the problem
 */
export function readTlsFiles(paths: TlsFilePaths): TlsMaterial {
  const certificate = readFile(paths.certFile);
  const privateKey = readFile(paths.keyFile);
  const ca = paths.caFile === undefined ? undefined : readFile(paths.caFile);
  const leaf = certificates(paths.certFile, certificate)[0] as X509Certificate;
  if (paths.caFile !== undefined && ca !== undefined) certificates(paths.caFile, ca);
  let key: ReturnType<typeof createPrivateKey>;
  try {
    key = createPrivateKey(privateKey);
  } catch (err) {
    throw new TlsFilesError(`${paths.keyFile} is not a usable PEM private key: ${reason(err)}`);
  }
  if (!leaf.checkPrivateKey(key)) {
    throw new TlsFilesError(`${paths.keyFile} is not the key of the certificate in ${paths.certFile}`);
  }
  try {
    createSecureContext({ cert: certificate, key: privateKey, ...(ca === undefined ? {} : { ca }) });
  } catch (err) {
    throw new TlsFilesError(`${paths.certFile}, ${paths.keyFile}: ${reason(err)}`);
  }
  return { certificate, privateKey, ca, notAfter: new Date(leaf.validTo) };
}

type IdentityListener = experimental.IdentityCertificateUpdateListener;
type CaListener = experimental.CaCertificateUpdateListener;

/** A TLS file set in use, reloadable; see the module comment. */
export class TlsFiles implements experimental.CertificateProvider {
  private identityListeners = new Set<IdentityListener>();
  private caListeners = new Set<CaListener>();

  private constructor(
    readonly paths: TlsFilePaths,
    private material: TlsMaterial,
  ) {}

  /** Reads and checks the files once. @throws TlsFilesError naming the file and the problem */
  static open(paths: TlsFilePaths): TlsFiles {
    return new TlsFiles(paths, readTlsFiles(paths));
  }

  /** The material in use. */
  get current(): TlsMaterial {
    return this.material;
  }

  /**
   * Reads the files again. When they pass every check, listeners get the new material and
   * undefined is returned; otherwise the material in use stays and the reason is returned.
   */
  reload(): string | undefined {
    let next: TlsMaterial;
    try {
      next = readTlsFiles(this.paths);
    } catch (err) {
      return reason(err);
    }
    this.material = next;
    for (const listener of this.caListeners) listener({ caCertificate: next.ca ?? Buffer.alloc(0) });
    for (const listener of this.identityListeners) {
      listener({ certificate: next.certificate, privateKey: next.privateKey });
    }
    return undefined;
  }

  /**
   * grpc-js server credentials served from these files: TLS with the current certificate and,
   * when the set has a client-CA bundle, client certificates required and verified against it.
   */
  serverCredentials(): ServerCredentials {
    const mutual = this.paths.caFile !== undefined;
    // grpc-js 1.14 passes its first argument on as the identity provider and its second as the
    // CA provider, whatever its typings call them; this object is both, so the order cannot bite.
    return experimental.createCertificateProviderServerCredentials(this, mutual ? this : null, mutual);
  }

  /** @see experimental.CertificateProvider */
  addCaCertificateListener(listener: CaListener): void {
    this.caListeners.add(listener);
    // grpc-js registers its own watcher only after adding this listener, so an update given
    // synchronously would be lost; a microtask still runs before the listener accepts anything.
    queueMicrotask(() => {
      if (this.caListeners.has(listener)) listener({ caCertificate: this.material.ca ?? Buffer.alloc(0) });
    });
  }

  /** @see experimental.CertificateProvider */
  removeCaCertificateListener(listener: CaListener): void {
    this.caListeners.delete(listener);
  }

  /** @see experimental.CertificateProvider */
  addIdentityCertificateListener(listener: IdentityListener): void {
    this.identityListeners.add(listener);
    // Deferred for the reason given in addCaCertificateListener.
    queueMicrotask(() => {
      if (this.identityListeners.has(listener)) {
        listener({ certificate: this.material.certificate, privateKey: this.material.privateKey });
      }
    });
  }

  /** @see experimental.CertificateProvider */
  removeIdentityCertificateListener(listener: IdentityListener): void {
    this.identityListeners.delete(listener);
  }
}

/** What a TLS file set serves, as the `use` label of the TLS metrics. */
export type TlsUse = "grpc" | "metrics" | "etcd-client";

/** The TLS metrics: reloads and certificate expiry, by use. */
export class TlsMetrics {
  private readonly reloads: Counter<"use" | "result">;
  private readonly expiry: Gauge<"use">;

  constructor(registry: Registry) {
    this.reloads = new Counter({
      name: "metadata_tls_reloads_total",
      help: "Reloads of a TLS certificate and key on SIGHUP, by use (grpc, metrics) and result (ok, failed: the previous certificate stays).",
      labelNames: ["use", "result"],
      registers: [registry],
    });
    this.expiry = new Gauge({
      name: "metadata_tls_certificate_expiry_timestamp_seconds",
      help: "notAfter of the leaf certificate in use, in unix seconds, by use (grpc, metrics, etcd-client).",
      labelNames: ["use"],
      registers: [registry],
    });
  }

  /** Records the leaf certificate now in use for `use`. */
  inUse(use: TlsUse, notAfter: Date): void {
    this.expiry.set({ use }, Math.floor(notAfter.getTime() / 1000));
  }

  /** Counts one reload of `use`. */
  reloaded(use: TlsUse, ok: boolean): void {
    this.reloads.inc({ use, result: ok ? "ok" : "failed" });
  }
}

/**
 * Reloads `files` for `use`, logs the outcome in one line, counts it and, when accepted, sets
 * the expiry gauge. Returns whether the new material is in use.
 */
export function reloadTlsFiles(files: TlsFiles, use: TlsUse, metrics: TlsMetrics): boolean {
  const failure = files.reload();
  metrics.reloaded(use, failure === undefined);
  if (failure !== undefined) {
    console.error(`tls: keeping the previous ${use} certificate: ${failure}`);
    return false;
  }
  const { notAfter } = files.current;
  metrics.inUse(use, notAfter);
  const expired = notAfter.getTime() <= Date.now() ? " (warning: already expired)" : "";
  console.error(
    `tls: reloaded the ${use} certificate from ${files.paths.certFile}, valid until ${notAfter.toISOString()}${expired}`,
  );
  return true;
}

/** notAfter of the first certificate in a PEM file, or undefined when it cannot be read or parsed. */
export function certificateExpiry(path: string): Date | undefined {
  try {
    const leaf = certificates(path, readFileSync(path))[0];
    return leaf === undefined ? undefined : new Date(leaf.validTo);
  } catch {
    return undefined;
  }
}
