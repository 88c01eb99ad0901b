/**
 * Policy: the tokens file of `--auth-tokens` (env METADATA_AUTH_TOKENS), parsed and validated
 * into an immutable AuthPolicy.
 *
 * Format (JSON):
 *   {"tokens": [
 *     {"name": "billing-writer", "sha256": "<64 hex digits: SHA-256 of the token>",
 *      "grants": [{"partitions": "billing-*", "access": "write"}]},
 *     {"name": "ops", "client_cert": "CN=ops.example.com",
 *      "grants": [{"partitions": "*", "access": "admin"}]}
 *   ]}
 * - `sha256` is the hex SHA-256 of the bearer token (`printf %s "$TOKEN" | sha256sum`); the token
 *   itself is never stored. `client_cert` names a verified client certificate instead: `CN=name`
 *   (subject common name) or one of its subject alternative names, `DNS:host`, `IP:addr`,
 *   `URI:uri`, `email:addr`. An entry has exactly one of the two.
 * - `partitions` is a partition name or a glob where `*` matches any run of characters
 *   (`billing-*`, `*`); `access` is `read` < `write` < `admin`, each including the ones before.
 *
 * Invariants:
 * - `parsePolicy` either returns a complete policy or throws a PolicyError naming the entry and
 *   the field; unknown fields are errors (a misspelt "grant" must not silently grant nothing).
 * - Names are unique, hashes are unique, certificate identities are unique.
 * - Nothing in a policy, an error message or a log line holds a token.
 */
import { readFileSync } from "node:fs";

/** Levels of access, each including the ones before it. */
export const ACCESS_LEVELS = ["read", "write", "admin"] as const;

/** read: Get, Keys, ListPartitions; write: read plus mutations and Sync; admin: everything. */
export type Access = (typeof ACCESS_LEVELS)[number];

/** One grant: `access` to every partition whose name `partitions` matches. */
export interface Grant {
  /** The name or glob as written in the file. */
  partitions: string;
  access: Access;
  /** True when `partitions` matches `name`. */
  matches(name: string): boolean;
}

/** A credential of the file with its grants. */
export interface PolicyEntry {
  name: string;
  grants: readonly Grant[];
  /** SHA-256 of the token (32 bytes), for token entries. */
  sha256?: Buffer;
  /** Certificate identity (`CN=...`, `DNS:...`, ...), for certificate entries. */
  clientCert?: string;
}

/** A validated tokens file. */
export interface AuthPolicy {
  /** Where it was read from (a file name), for log lines. */
  source: string;
  tokens: readonly PolicyEntry[];
  /** Certificate entries by identity. */
  certificates: ReadonlyMap<string, PolicyEntry>;
}

/** A tokens file that cannot be used. */
export class PolicyError extends Error {
  override readonly name = "PolicyError";
}

/** True when `have` includes `need` (admin includes write includes read). */
export function includesAccess(have: Access, need: Access): boolean {
  return ACCESS_LEVELS.indexOf(have) >= ACCESS_LEVELS.indexOf(need);
}

const PARTITION_GLOB = /^[A-Za-z0-9_*-]+$/;
const SHA256_HEX = /^[0-9a-fA-F]{64}$/;
const CERT_IDENTITY = /^(CN=|DNS:|IP:|URI:|email:).+$/;
const ENTRY_FIELDS = new Set(["name", "sha256", "client_cert", "grants"]);
const GRANT_FIELDS = new Set(["partitions", "access"]);

/** A matcher for a partition name or a glob with `*`. */
export function compileGlob(pattern: string): (name: string) => boolean {
  if (!pattern.includes("*")) return (name) => name === pattern;
  if (pattern === "*") return () => true;
  // Only [A-Za-z0-9_-] besides `*`, so nothing else needs escaping; `-` is literal outside [].
  const regex = new RegExp(`^${pattern.split("*").join(".*")}$`, "s");
  return (name) => regex.test(name);
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/**
 * Parses and validates the text of a tokens file. `source` names it in error messages.
 * @throws PolicyError
 */
export function parsePolicy(text: string, source: string): AuthPolicy {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new PolicyError(`${source}: not JSON: ${(err as Error).message}`);
  }
  if (!isObject(json) || !Array.isArray(json.tokens)) {
    throw new PolicyError(`${source}: expected {"tokens": [...]}`);
  }
  for (const key of Object.keys(json)) {
    if (key !== "tokens") throw new PolicyError(`${source}: unknown field ${JSON.stringify(key)}`);
  }
  const names = new Set<string>();
  const hashes = new Set<string>();
  const certificates = new Map<string, PolicyEntry>();
  const tokens: PolicyEntry[] = [];
  json.tokens.forEach((raw: unknown, index: number) => {
    const where = `${source}: tokens[${index}]`;
    if (!isObject(raw)) throw new PolicyError(`${where}: expected an object`);
    for (const key of Object.keys(raw)) {
      if (!ENTRY_FIELDS.has(key)) throw new PolicyError(`${where}: unknown field ${JSON.stringify(key)}`);
    }
    const name = raw.name;
    if (typeof name !== "string" || name === "" || /[\p{Cc}]/u.test(name)) {
      throw new PolicyError(`${where}: "name" must be a non-empty string without control characters`);
    }
    const at = `${source}: token ${JSON.stringify(name)}`;
    if (names.has(name)) throw new PolicyError(`${at}: name given twice`);
    names.add(name);
    const hasHash = raw.sha256 !== undefined;
    const hasCert = raw.client_cert !== undefined;
    if (hasHash === hasCert) throw new PolicyError(`${at}: give exactly one of "sha256" and "client_cert"`);
    const grants = parseGrants(raw.grants, at);
    if (hasHash) {
      // The value is never echoed: a token pasted here by mistake must not reach the log.
      if (typeof raw.sha256 !== "string" || !SHA256_HEX.test(raw.sha256)) {
        throw new PolicyError(
          `${at}: "sha256" must be 64 hex digits (the SHA-256 of the token, not the token)`,
        );
      }
      const hex = raw.sha256.toLowerCase();
      if (hashes.has(hex)) throw new PolicyError(`${at}: the same "sha256" as another token`);
      hashes.add(hex);
      tokens.push({ name, grants, sha256: Buffer.from(hex, "hex") });
    } else {
      const identity = raw.client_cert;
      if (typeof identity !== "string" || !CERT_IDENTITY.test(identity)) {
        throw new PolicyError(
          `${at}: "client_cert" must be CN=name, DNS:host, IP:addr, URI:uri or email:addr`,
        );
      }
      if (certificates.has(identity)) {
        throw new PolicyError(`${at}: the same "client_cert" as another entry`);
      }
      certificates.set(identity, { name, grants, clientCert: identity });
    }
  });
  return { source, tokens, certificates };
}

function parseGrants(raw: unknown, at: string): Grant[] {
  if (!Array.isArray(raw)) throw new PolicyError(`${at}: "grants" must be a list`);
  return raw.map((grant: unknown, index: number) => {
    const where = `${at}: grants[${index}]`;
    if (!isObject(grant)) throw new PolicyError(`${where}: expected an object`);
    for (const key of Object.keys(grant)) {
      if (!GRANT_FIELDS.has(key)) throw new PolicyError(`${where}: unknown field ${JSON.stringify(key)}`);
    }
    const { partitions, access } = grant;
    if (typeof partitions !== "string" || !PARTITION_GLOB.test(partitions)) {
      throw new PolicyError(`${where}: "partitions" must be a partition name or a glob of [A-Za-z0-9_-*]`);
    }
    if (typeof access !== "string" || !(ACCESS_LEVELS as readonly string[]).includes(access)) {
      throw new PolicyError(`${where}: "access" must be one of ${ACCESS_LEVELS.join(", ")}`);
    }
    return { partitions, access: access as Access, matches: compileGlob(partitions) };
  });
}

/** Reads and parses the tokens file at `file`. @throws PolicyError (also for a file that cannot be read) */
export function loadPolicy(file: string): AuthPolicy {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (err) {
    throw new PolicyError(`${file}: ${(err as Error).message}`);
  }
  return parsePolicy(text, file);
}

/**
 * Reads a file holding the hex SHA-256 of one bearer token (the first word, so the output of
 * `printf %s "$TOKEN" | sha256sum` works as is). Returns the 32 bytes.
 * @throws PolicyError naming the file, never echoing its contents
 */
export function loadTokenHashFile(file: string): Buffer {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (err) {
    throw new PolicyError(`${file}: ${(err as Error).message}`);
  }
  const word = text.trim().split(/\s+/)[0] ?? "";
  if (!SHA256_HEX.test(word)) {
    throw new PolicyError(`${file}: expected 64 hex digits (the SHA-256 of the token, not the token)`);
  }
  return Buffer.from(word.toLowerCase(), "hex");
}
