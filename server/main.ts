/**
 * Entry point: `npm start [-- flags]` runs the server with the embedded defaults (data in ./data,
 * gRPC on 127.0.0.1:50051, metrics on 127.0.0.1:9464); see config.ts for every flag and serve.ts
 * for the signal handling (SIGTERM/SIGINT: finish in-flight calls, commit buffered changes, exit 0).
 *
 * `npm start` builds dist/ when a source changed (scripts/build.mjs), then `exec`s
 * `node dist/server/main.js`: the server is the process npm signals, so a SIGTERM to the PID of
 * `npm start` (what a supervisor holds) stops the server itself.
 */
import { serve } from "./serve.js";

serve(process.argv.slice(2), "npm start -- [flags]").catch((err: unknown) => {
  console.error("error:", err instanceof Error ? err.message : err);
  process.exit(1);
});
