/**
 * serve: runs the service from command-line flags until SIGTERM or SIGINT, for `npm start`
 * (server/main.ts) and `npm run cli -- serve` alike.
 *
 * Invariants: a bad flag prints the problem and exits 2; an address that cannot be bound prints
 * one line (`error: cannot listen on ADDR: ...`) and exits 1, and so does an etcd that cannot be
 * used at start (`error: etcd at URL: REASON (DETAIL)`: certificates, login, unreachable); the first signal stops taking calls,
 * finishes in-flight ones, commits buffered changes and exits 0 (1 if stopping fails), also when
 * it arrives while the service is starting (the stop follows the start); a second signal exits
 * at once with 1. SIGHUP reloads the tokens file, the metrics token file and the TLS
 * certificates, keys and client CA of the gRPC and metrics ports (a bad file keeps the previous
 * one; connections and calls carry on). On etcd storage, a server
 * that loses ownership of its partitions exits with 3.
 */
import { setLogger } from "@grpc/grpc-js";
import { EtcdUnavailableError, etcdUrls } from "./cluster/etcd-client.js";
import { ConfigError, parseConfig, USAGE } from "./config.js";
import { startService } from "./service.js";

/**
 * A failure to bind an address, as one line: `cannot listen on ADDR: address already in use`;
 * undefined for any other error.
 */
export function listenFailure(err: unknown): string | undefined {
  const message = err instanceof Error ? err.message : String(err);
  const match = /\b(EADDRINUSE|EACCES|EADDRNOTAVAIL)\b[^\]]*?(\S+:\d+)\b/.exec(message);
  if (match === null) return undefined;
  const reason =
    match[1] === "EADDRINUSE"
      ? "address already in use (another process holds the port)"
      : match[1] === "EACCES"
        ? "permission denied"
        : "no such local address";
  return `cannot listen on ${match[2]}: ${reason}`;
}

// grpc-js logs a failed bind itself before rejecting; the rejection is reported once, below.
setLogger({
  error: (message: unknown, ...rest: unknown[]) => {
    if (typeof message === "string" && message.startsWith("No address added out of total")) return;
    console.error(`E ${message}`, ...rest);
  },
  info: (message: unknown, ...rest: unknown[]) => console.error(`I ${message}`, ...rest),
  debug: (message: unknown, ...rest: unknown[]) => console.error(`D ${message}`, ...rest),
});

/** Starts the service described by `args` and stops it on the first SIGTERM or SIGINT. */
export async function serve(args: readonly string[], usage: string): Promise<void> {
  if (args.includes("--help") || args.includes("-h")) {
    console.log(`usage: ${usage}\n${USAGE}`);
    return;
  }
  let config: ReturnType<typeof parseConfig>;
  try {
    config = parseConfig(args);
  } catch (err) {
    if (err instanceof ConfigError) {
      console.error(`error: ${err.message}`);
      process.exit(2);
    }
    throw err;
  }
  // The handlers go in before the port is bound, so that a signal arriving while the service
  // starts (calls may already be served) stops it gracefully once started, instead of killing
  // the process with the default action.
  let service: Awaited<ReturnType<typeof startService>> | undefined;
  let signalled = false;
  const stop = (signal: NodeJS.Signals) => {
    if (signalled) {
      console.error(`${signal} again: exiting now`);
      process.exit(1);
    }
    signalled = true;
    console.log(`${signal}: finishing in-flight calls and committing buffered changes`);
    // Before the service is up, the stop follows as soon as it is.
    if (service !== undefined) stopService(service);
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
  process.on("SIGHUP", () => {
    console.log("SIGHUP: reloading the tokens files and the TLS certificates");
    service?.reload();
  });
  try {
    service = await startService(config);
  } catch (err) {
    const failure = err instanceof EtcdUnavailableError ? err.message : listenFailure(err);
    if (failure === undefined) throw err;
    console.error(`error: ${failure}`);
    process.exit(1);
  }
  const metrics =
    service.metricsPort === undefined
      ? "off"
      : `http://${config.metricsListen?.host}:${service.metricsPort}/metrics`;
  const data =
    config.etcd === undefined
      ? config.dataDir
      : `etcd ${etcdUrls(config.etcd).join(",")} prefix ${config.etcd.prefix}/${config.etcd.auth === undefined ? "" : ` as ${config.etcd.auth.username}`}`;
  console.log(
    `metadata server listening on ${config.listen.replace(/:\d+$/, `:${service.port}`)} (data ${data}, metrics ${metrics})`,
  );
  if (service.ownershipLost !== undefined) {
    void service.ownershipLost.then((reason) => {
      // Its stores may be behind the new owner's: exit, for a supervisor to restart it as a standby.
      console.error(`ownership lost (${reason}): exiting`);
      process.exit(3);
    });
  }
  if (signalled) stopService(service);
}

/** Stops the service and exits: 0 once stopped, 1 if stopping failed. */
function stopService(service: Awaited<ReturnType<typeof startService>>): void {
  service.stop().then(
    () => {
      console.log("stopped");
      process.exit(0);
    },
    (err: unknown) => {
      console.error("error while stopping:", err);
      process.exit(1);
    },
  );
}
