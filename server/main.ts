/**
 * Entry point: `npm start [-- flags]` runs the server with the embedded defaults (data in ./data,
 * gRPC on 127.0.0.1:50051, metrics on 127.0.0.1:9464); see config.ts for every flag.
 *
 * SIGTERM or SIGINT: stop taking calls, finish in-flight ones, commit buffered changes, exit 0.
 * A second signal exits at once with status 1.
 */
import { ConfigError, parseConfig, USAGE } from "./config.js";
import { startService } from "./service.js";

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  if (args.includes("--help") || args.includes("-h")) {
    console.log(`usage: npm start -- [flags]\n${USAGE}`);
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
  console.log(
    `metadata server listening on ${config.listen.replace(/:\d+$/, `:${service.port}`)} (data ${config.dataDir}, metrics ${metrics})`,
  );
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
}

main().catch((err: unknown) => {
  console.error("error:", err instanceof Error ? err.message : err);
  process.exit(1);
});
