/**
 * etcd client: the one client a server on `--storage etcd` uses for both the ownership election
 * and the storage, built from the `--etcd-*` flags, and the start-up check that it can use etcd.
 *
 * Invariants:
 * - Endpoints are `https://` exactly when a CA file is given (`--etcd-ca-file`): etcd's server
 *   certificate must then be verified by that CA (the system's CAs are not used), and the client
 *   certificate is presented when one is given (etcd's `--client-cert-auth`).
 * - The password lives only in its file, never in a flag or in the config. The file is read at
 *   start and again at every authentication to etcd (a new token, after the old one expired or
 *   was invalidated, as etcd does on a password change), so a rotated password is used without a
 *   restart: write the new password to the file, then change it in etcd. If the file cannot be
 *   read at that moment, the last password read is used.
 * - `checkEtcd` resolves only after one read under the prefix succeeded, as this server's user,
 *   within `ETCD_CHECK_TIMEOUT_MS`; otherwise it throws `EtcdUnavailableError`, whose one-line
 *   message says what failed: etcd's certificate, this server's certificate, the login, the
 *   user's permissions, or the connection.
 * - etcd out of space (RESOURCE_EXHAUSTED "database space exceeded") is an answer, not a fault of
 *   the connection: it is neither retried nor counted by the circuit breaker
 *   (`etcdFaultHandling`). With etcd3's defaults it is both, and after three refused writes the
 *   breaker refused every call for 5 s, reads and lease calls included.
 *
 * Usage:
 *   const client = createEtcdClient(config.etcd);
 *   await checkEtcd(client, config.etcd); // throws EtcdUnavailableError, with the reason
 */
import { readFileSync } from "node:fs";
import { ConsecutiveBreaker, circuitBreaker, handleWhen, retry } from "cockatiel";
import {
  Etcd3,
  EtcdAuthenticationFailedError,
  EtcdPermissionDeniedError,
  EtcdUserNotFoundError,
  type IOptions,
  isRecoverableError,
} from "etcd3";
import { type EtcdConfig, readPasswordFile } from "../config.js";
import { isEtcdNoSpace } from "../store/storage/etcd.js";

/** Longest wait of the start-up check, and of each authentication to etcd, in milliseconds. */
export const ETCD_CHECK_TIMEOUT_MS = 10_000;

/** etcd cannot be used at start; the message is one line, saying why. */
export class EtcdUnavailableError extends Error {
  override readonly name = "EtcdUnavailableError";
}

/** The endpoints as the client dials them: `https://` with TLS, else `http://`. */
export function etcdUrls(config: EtcdConfig): string[] {
  const scheme = config.tls === undefined ? "http" : "https";
  return config.endpoints.map((endpoint) => `${scheme}://${endpoint}`);
}

/**
 * etcd3's fault handling (three tries per call, a per-endpoint circuit breaker opening for 5 s
 * after three failures in a row) for the errors etcd3 calls recoverable, except etcd out of
 * space: a full etcd refuses writes until an operator frees space, so retrying gains nothing,
 * and reads must keep working meanwhile.
 */
export function etcdFaultHandling(): NonNullable<IOptions["faultHandling"]> {
  const recoverable = handleWhen((err) => isRecoverableError(err) && !isEtcdNoSpace(err));
  return {
    host: () => circuitBreaker(recoverable, { halfOpenAfter: 5_000, breaker: new ConsecutiveBreaker(3) }),
    global: retry(recoverable, { maxAttempts: 3 }),
  };
}

/**
 * Builds the client described by `config`. Reads the TLS files and the password file now
 * (@throws Error when one cannot be read); connects lazily, on the first call.
 */
export function createEtcdClient(config: EtcdConfig): Etcd3 {
  const options: IOptions = { hosts: etcdUrls(config), faultHandling: etcdFaultHandling() };
  const tls = config.tls;
  if (tls !== undefined) {
    options.credentials = {
      rootCertificate: readFileSync(tls.caFile),
      ...(tls.client === undefined
        ? {}
        : { certChain: readFileSync(tls.client.certFile), privateKey: readFileSync(tls.client.keyFile) }),
    };
  }
  const auth = config.auth;
  if (auth !== undefined) {
    const passwordFile = auth.passwordFile;
    let last = readPasswordFile(passwordFile);
    options.auth = {
      username: auth.username,
      // etcd3 reads `password` at every authentication: a getter picks up a rotated file.
      get password(): string {
        try {
          last = readPasswordFile(passwordFile);
        } catch (err) {
          console.error(`etcd: keeping the previous password: ${(err as Error).message}`);
        }
        return last;
      },
      callOptions: () => ({ deadline: Date.now() + ETCD_CHECK_TIMEOUT_MS }),
    };
  }
  return new Etcd3(options);
}

/**
 * Reads one key under the prefix, to find out at start whether this server can use etcd: it
 * resolves once etcd answered, else throws `EtcdUnavailableError`, at the latest after
 * `ETCD_CHECK_TIMEOUT_MS` (login included).
 */
export async function checkEtcd(client: Etcd3, config: EtcdConfig): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  // The deadline covers the read; the timer also covers the login before it.
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`no answer within ${ETCD_CHECK_TIMEOUT_MS} ms`)),
      ETCD_CHECK_TIMEOUT_MS,
    );
  });
  try {
    await Promise.race([
      client
        .get(`${config.prefix}/.partitions`)
        .options({ deadline: Date.now() + ETCD_CHECK_TIMEOUT_MS })
        .exec(),
      timeout,
    ]);
  } catch (err) {
    throw new EtcdUnavailableError(describeEtcdFailure(err, config));
  } finally {
    clearTimeout(timer);
  }
}

/** One line: which part of talking to etcd failed, what to check, and etcd's own words. */
export function describeEtcdFailure(err: unknown, config: EtcdConfig): string {
  const message = err instanceof Error ? err.message : String(err);
  // grpc-js puts the TLS error on the first line, then a time stamp and a "Resolution note".
  const detail = (message.split("\n")[0] ?? message)
    .replace(/\.?\s*Resolution note:.*$/, "")
    .replace(/\s*\(\d{4}-\d\d-\d\dT[^)]*\)/, "")
    .trim();
  const where = `etcd at ${etcdUrls(config).join(",")}`;
  const user = config.auth === undefined ? "no user" : `user ${JSON.stringify(config.auth.username)}`;
  let reason: string;
  if (err instanceof EtcdAuthenticationFailedError || err instanceof EtcdUserNotFoundError) {
    reason = `etcd refused the login of ${user}: check --etcd-username and --etcd-password-file`;
  } else if (err instanceof EtcdPermissionDeniedError || /user name is empty/.test(detail)) {
    reason =
      config.auth !== undefined
        ? `etcd denied ${user} access to ${config.prefix}/: grant its role readwrite on the prefix ${config.prefix}/`
        : config.tls?.client !== undefined
          ? `etcd denied access to ${config.prefix}/: it has authentication enabled and takes the client certificate's CN as the user: grant that user's role readwrite on the prefix ${config.prefix}/, or give --etcd-username and --etcd-password-file`
          : `etcd denied access to ${config.prefix}/: it has authentication enabled, give --etcd-username and --etcd-password-file`;
  } else if (
    /alert (bad certificate|certificate required|unknown ca)|alert number (42|116|48)\b/i.test(detail)
  ) {
    reason =
      config.tls?.client === undefined
        ? "etcd requires a client certificate: give --etcd-cert-file and --etcd-key-file"
        : "etcd refused this server's client certificate (--etcd-cert-file): is it signed by a CA in etcd's --trusted-ca-file, and for client authentication?";
  } else if (/certificate|self[- ]signed|verify/i.test(detail) && config.tls !== undefined) {
    reason = `etcd's server certificate is not verified by --etcd-ca-file ${config.tls.caFile}`;
  } else if (
    config.tls !== undefined &&
    /wrong version number|Failed to connect|packet length too long/i.test(detail)
  ) {
    reason = "no TLS connection (does etcd serve https on these endpoints? does it listen?)";
  } else {
    reason = "cannot reach etcd";
  }
  return `${where}: ${reason} (${detail})`;
}
