/**
 * AccessControl: who is calling (authenticate) and whether they may touch a partition
 * (authorize), for every RPC except Health.
 *
 * Credentials, in order:
 * 1. `authorization: Bearer <token>` metadata: the token's SHA-256 is compared with every
 *    `sha256` of the tokens file in constant time (no early exit, `timingSafeEqual`).
 * 2. Otherwise a client certificate verified by the TLS handshake against `--tls-client-ca`:
 *    its identities (`CN=...`, `DNS:...`, certificate-identity.ts) are looked up among the
 *    file's `client_cert` entries, first the CN, then the SANs in certificate order; a
 *    certificate none of them names is known but has no grants. With a client CA and no tokens
 *    file, every verified certificate has admin access to everything: the CA is then the whole
 *    policy.
 * With neither a tokens file nor a client CA, authentication is off and every call acts as
 * `anonymous` with admin access (the server refuses to listen beyond loopback that way unless
 * told to, see config.ts).
 *
 * Invariants:
 * - No or unknown credentials -> AuthError "Unauthenticated"; a known credential without the
 *   grant -> "PermissionDenied" naming the partition and the access needed. Neither message
 *   holds a token or a token's hash.
 * - Every refusal increments `metadata_auth_refused_total{reason}` and writes one audit line
 *   (who, method, partition, peer, reason); the partition is JSON-quoted, so a client cannot
 *   forge log lines with it. At most `auditLinesPerSecond` (100) lines are written per second,
 *   so a flood of bad calls cannot flood the log; the refusals left out are counted in the
 *   metric and reported by one line with the next refusal after that second.
 * - `reload()` swaps the policy atomically; a file that fails to load keeps the previous policy
 *   and logs why. A principal authenticated before a reload (an open stream) is looked up again
 *   in the new policy on its next authorization, so a revoked token stops working at once while
 *   other principals carry on.
 *
 * Usage:
 *   const access = AccessControl.open({ tokensFile, clientCertificates: true, registry });
 *   const principal = access.check(call, "Put", partition, "write"); // throws AuthError
 */
import { createHash, timingSafeEqual } from "node:crypto";
import type { PeerCertificate } from "node:tls";
import type { Metadata } from "@grpc/grpc-js";
import { Counter, type Registry } from "prom-client";
import { certificateIdentities } from "./certificate-identity.js";
import { type Access, type AuthPolicy, includesAccess, loadPolicy, type PolicyEntry } from "./policy.js";

/** Why a call was refused, the label of `metadata_auth_refused_total`. */
export type RefusalReason =
  | "missing_credentials"
  | "malformed_authorization"
  | "unknown_token"
  | "revoked"
  | "permission_denied";

/** A refused call; status.ts maps the kind to UNAUTHENTICATED or PERMISSION_DENIED. */
export class AuthError extends Error {
  override readonly name = "AuthError";
  constructor(
    readonly kind: "Unauthenticated" | "PermissionDenied",
    readonly reason: RefusalReason,
    message: string,
  ) {
    super(message);
  }
}

/** The caller of an RPC as authenticated. */
export interface Principal {
  /** Name of its tokens-file entry, `certificate CN=...` (CA-only mTLS) or `anonymous`. */
  readonly name: string;
  readonly kind: "token" | "certificate" | "anonymous";
}

/** What authentication reads from a call: grpc-js server calls have all three. */
export interface CallCredentialsSource {
  metadata: Metadata;
  /** grpc-js's AuthContext (not exported by it): the verified client certificate, if any. */
  getAuthContext(): { sslPeerCertificate?: PeerCertificate | undefined } | null;
  getPeer(): string;
}

/** Options of `AccessControl.open`. */
export interface AccessControlOptions {
  /** The tokens file (`--auth-tokens`); none when absent. */
  tokensFile?: string | undefined;
  /** True when the server requires client certificates (`--tls-client-ca`). */
  clientCertificates?: boolean;
  registry: Registry;
  /** Receives audit and reload lines; console.error by default. */
  log?: (line: string) => void;
  /** Most audit lines per second (default 100). */
  auditLinesPerSecond?: number;
  /** Clock of the audit rate limit, in ms. @internal */
  now?: () => number;
}

/** Internal state of a Principal: how to find its grants again after a reload. */
interface ResolvedPrincipal extends Principal {
  /** Token hash or certificate identities; none for anonymous and CA-only principals. */
  readonly credential: Buffer | readonly string[] | undefined;
  /** Entry in `policy`; undefined means every access to every partition. */
  entry: PolicyEntry | undefined;
  policy: AuthPolicy | undefined;
}

const ANONYMOUS: ResolvedPrincipal = {
  name: "anonymous",
  kind: "anonymous",
  credential: undefined,
  entry: undefined,
  policy: undefined,
};

const BEARER = /^bearer +([\x21-\x7e]+) *$/i;

/** See the module comment. */
export class AccessControl {
  private policy: AuthPolicy | undefined;
  private readonly refused: Counter<"reason">;
  private readonly reloads: Counter<"result">;
  private readonly log: (line: string) => void;
  private readonly auditLinesPerSecond: number;
  private readonly now: () => number;
  /** Start of the current second of the audit rate limit, lines written and left out in it. */
  private auditSecond = Number.NEGATIVE_INFINITY;
  private auditWritten = 0;
  private auditLeftOut = 0;

  private constructor(
    private readonly tokensFile: string | undefined,
    private readonly clientCertificates: boolean,
    registry: Registry,
    options: AccessControlOptions,
  ) {
    this.log = options.log ?? ((line) => console.error(line));
    this.auditLinesPerSecond = options.auditLinesPerSecond ?? 100;
    this.now = options.now ?? Date.now;
    this.refused = counter(
      registry,
      "metadata_auth_refused_total",
      "Calls refused by authentication or authorization, by reason.",
      "reason",
    );
    this.reloads = counter(
      registry,
      "metadata_auth_reloads_total",
      "Reloads of the tokens file (SIGHUP), by result (ok, failed).",
      "result",
    );
  }

  /** Builds the access control and loads the tokens file, if any. @throws PolicyError */
  static open(options: AccessControlOptions): AccessControl {
    const access = new AccessControl(
      options.tokensFile,
      options.clientCertificates ?? false,
      options.registry,
      options,
    );
    if (options.tokensFile !== undefined) {
      const policy = loadPolicy(options.tokensFile);
      access.policy = policy;
      access.log(`auth: ${describe(policy)}`);
      if (policy.certificates.size > 0 && !access.clientCertificates) {
        access.log("auth: warning: client_cert entries apply only with --tls-client-ca");
      }
    }
    return access;
  }

  /** True when calls must carry credentials (a tokens file or a client CA is configured). */
  get enabled(): boolean {
    return this.tokensFile !== undefined || this.clientCertificates;
  }

  /**
   * Reads the tokens file again. On success the new policy applies to the next authorization of
   * every call, open streams included; on failure the previous policy stays and the reason is
   * logged. Returns true when the new file was taken.
   */
  reload(): boolean {
    if (this.tokensFile === undefined) {
      this.log("auth: no --auth-tokens file to reload");
      return false;
    }
    try {
      this.policy = loadPolicy(this.tokensFile);
      this.reloads.inc({ result: "ok" });
      this.log(`auth: reloaded ${describe(this.policy)}`);
      return true;
    } catch (err) {
      this.reloads.inc({ result: "failed" });
      this.log(`auth: keeping the previous tokens: ${(err as Error).message}`);
      return false;
    }
  }

  /**
   * Who is calling. Returns an AuthError (already counted and logged) for missing, malformed or
   * unknown credentials; `partition` only goes to the audit line.
   */
  authenticate(call: CallCredentialsSource, method: string, partition?: string): Principal | AuthError {
    if (!this.enabled) return ANONYMOUS;
    // Without a tokens file a bearer token can mean nothing: the certificate decides.
    const header = this.tokensFile === undefined ? [] : call.metadata.get("authorization");
    if (header.length > 0) {
      const match = header.length === 1 && typeof header[0] === "string" ? BEARER.exec(header[0]) : null;
      if (match === null) {
        return this.refuse(
          call,
          method,
          partition,
          "anonymous",
          "Unauthenticated",
          "malformed_authorization",
          'malformed authorization metadata: send one "authorization: Bearer <token>"',
        );
      }
      const entry = this.findToken(sha256(match[1] as string));
      if (entry === undefined) {
        return this.refuse(
          call,
          method,
          partition,
          "unknown-token",
          "Unauthenticated",
          "unknown_token",
          "unknown bearer token",
        );
      }
      const principal: ResolvedPrincipal = {
        name: entry.name,
        kind: "token",
        credential: entry.sha256,
        entry,
        policy: this.policy,
      };
      return principal;
    }
    const cert = call.getAuthContext()?.sslPeerCertificate;
    if (cert !== undefined && this.clientCertificates) {
      const identities = certificateIdentities(cert);
      if (this.policy === undefined) {
        const principal: ResolvedPrincipal = {
          name: `certificate ${identities[0] ?? "(no name)"}`,
          kind: "certificate",
          credential: undefined,
          entry: undefined,
          policy: undefined,
        };
        return principal;
      }
      // A certificate the CA verified is a known identity even when the file grants it nothing.
      const entry = this.findCertificate(identities) ?? ungranted(identities);
      const principal: ResolvedPrincipal = {
        name: entry.name,
        kind: "certificate",
        credential: identities,
        entry,
        policy: this.policy,
      };
      return principal;
    }
    return this.refuse(
      call,
      method,
      partition,
      "anonymous",
      "Unauthenticated",
      "missing_credentials",
      this.clientCertificates && this.tokensFile === undefined
        ? "missing credentials: a client certificate is required"
        : 'missing credentials: send "authorization: Bearer <token>" metadata' +
            (this.clientCertificates ? " or a client certificate" : ""),
    );
  }

  /**
   * Whether `principal` holds `access` to `partition` (the resolved name, never ""). Returns
   * undefined when it does, else an AuthError (already counted and logged): PermissionDenied,
   * or Unauthenticated when its credential was revoked by a reload.
   */
  authorize(
    call: CallCredentialsSource,
    principal: Principal,
    method: string,
    partition: string,
    access: Access,
  ): AuthError | undefined {
    const resolved = this.current(principal as ResolvedPrincipal);
    if (resolved === undefined) {
      return this.refuse(
        call,
        method,
        partition,
        `${principal.kind} ${JSON.stringify(principal.name)}`,
        "Unauthenticated",
        "revoked",
        "credential no longer valid",
      );
    }
    if (allows(resolved, partition, access)) return undefined;
    return this.refuse(
      call,
      method,
      partition,
      `${principal.kind} ${JSON.stringify(principal.name)}`,
      "PermissionDenied",
      "permission_denied",
      `permission denied: ${access} access to partition ${JSON.stringify(partition)} is needed`,
    );
  }

  /** authenticate then authorize; returns the principal. @throws AuthError */
  check(call: CallCredentialsSource, method: string, partition: string, access: Access): Principal {
    const principal = this.authenticate(call, method, partition);
    if (principal instanceof AuthError) throw principal;
    const refused = this.authorize(call, principal, method, partition, access);
    if (refused !== undefined) throw refused;
    return principal;
  }

  /** The names among `partitions` that `principal` may read (ListPartitions). */
  readable(principal: Principal, partitions: readonly string[]): string[] {
    const resolved = this.current(principal as ResolvedPrincipal);
    if (resolved === undefined) return [];
    return partitions.filter((name) => allows(resolved, name, "read"));
  }

  /** The entry of `principal` in the current policy, looked up again after a reload. */
  private current(principal: ResolvedPrincipal): ResolvedPrincipal | undefined {
    if (principal.credential === undefined || principal.policy === this.policy) return principal;
    const entry = Buffer.isBuffer(principal.credential)
      ? this.findToken(principal.credential)
      : (this.findCertificate(principal.credential) ?? ungranted(principal.credential));
    if (entry === undefined) return undefined;
    principal.entry = entry;
    principal.policy = this.policy;
    return principal;
  }

  /** The token entry whose hash equals `hash`, comparing with every entry in constant time. */
  private findToken(hash: Buffer): PolicyEntry | undefined {
    let found: PolicyEntry | undefined;
    for (const entry of this.policy?.tokens ?? []) {
      if (timingSafeEqual(entry.sha256 as Buffer, hash) && found === undefined) found = entry;
    }
    return found;
  }

  private findCertificate(identities: readonly string[]): PolicyEntry | undefined {
    for (const identity of identities) {
      const entry = this.policy?.certificates.get(identity);
      if (entry !== undefined) return entry;
    }
    return undefined;
  }

  private refuse(
    call: CallCredentialsSource,
    method: string,
    partition: string | undefined,
    who: string,
    kind: AuthError["kind"],
    reason: RefusalReason,
    message: string,
  ): AuthError {
    this.refused.inc({ reason });
    const now = this.now();
    if (now - this.auditSecond >= 1000) {
      if (this.auditLeftOut > 0) {
        this.log(
          `auth: ${this.auditLeftOut} refused call(s) not logged (over ${this.auditLinesPerSecond} lines/s); metadata_auth_refused_total counts them`,
        );
      }
      this.auditSecond = now;
      this.auditWritten = 0;
      this.auditLeftOut = 0;
    }
    if (this.auditWritten >= this.auditLinesPerSecond) {
      this.auditLeftOut++;
      return new AuthError(kind, reason, message);
    }
    this.auditWritten++;
    let peer = "unknown";
    try {
      peer = call.getPeer();
    } catch {
      // A call whose connection is gone has no peer; the line is still worth writing.
    }
    this.log(
      `auth: refused method=${method} partition=${partition === undefined ? "-" : JSON.stringify(partition)} who=${who} peer=${peer} reason=${reason}`,
    );
    return new AuthError(kind, reason, message);
  }
}

/** The entry of a verified certificate that no `client_cert` names: no grants. */
function ungranted(identities: readonly string[]): PolicyEntry {
  return { name: `certificate ${identities[0] ?? "(no name)"}`, grants: [] };
}

function allows(principal: ResolvedPrincipal, partition: string, access: Access): boolean {
  if (principal.entry === undefined) return true;
  return principal.entry.grants.some(
    (grant) => includesAccess(grant.access, access) && grant.matches(partition),
  );
}

/** "N token(s) and M certificate identity(ies) from FILE", for log lines. */
function describe(policy: AuthPolicy): string {
  return `${policy.tokens.length} token(s) and ${policy.certificates.size} certificate identity(ies) from ${policy.source}`;
}

/** SHA-256 of a token's UTF-8 bytes. */
export function sha256(token: string): Buffer {
  return createHash("sha256").update(token, "utf8").digest();
}

function counter<L extends string>(registry: Registry, name: string, help: string, label: L): Counter<L> {
  return (
    (registry.getSingleMetric(name) as Counter<L> | undefined) ??
    new Counter({ name, help, labelNames: [label], registers: [registry] })
  );
}
