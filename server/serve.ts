/**
 * serve: runs the service from command-line flags until SIGTERM or SIGINT, for `npm start`
 * (server/main.ts) and `npm run cli -- serve` alike.
 *
 * Invariants: a bad flag prints the problem and exits 2; the first signal stops taking calls,
 * finishes in-flight ones, commits buffered changes and exits 0 (1 if stopping fails); a second
 * signal exits at once with 1. SIGHUP reloads the tokens file and the metrics token file
 * (a bad file keeps the previous one; connections and calls carry on). On etcd storage, a server
 * that loses ownership of its partitions exits with 3.
 */
import { ConfigError, parseConfig, USAGE } from "./config.js";
import { startService } from "./service.js";

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
  const service = await startService(config);
  const metrics =
    service.metricsPort === undefined
      ? "off"
      : `http://${config.metricsListen?.host}:${service.metricsPort}/metrics`;
  const data =
    config.etcd === undefined
      ? config.dataDir
      : `etcd ${config.etcd.endpoints.join(",")} prefix ${config.etcd.prefix}/`;
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
  let signalled = false;
  const stop = (signal: NodeJS.Signals) => {
    if (signalled) {
      console.error(`${signal} again: exiting now`);
      process.exit(1);
    }
    signalled = true;
    console.log(`${signal}: finishing in-flight calls and committing buffered changes`);
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
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
  process.on("SIGHUP", () => {
    console.log("SIGHUP: reloading the tokens files");
    service.reload();
  });
}
