/**
 * Command-line plumbing shared by the benchmark's fixture servers (noop-server.ts,
 * http2-noop-server.ts): the `--port N` flag, and stopping on SIGTERM, SIGINT or, with
 * `--exit-with-stdin`, when stdin closes (so a fixture never outlives a parent that died without
 * killing it).
 */

/** The port of `--port N` (0..65535), or 0 (any free port) when absent. */
export function parsePort(argv: readonly string[]): number {
  const at = argv.indexOf("--port");
  if (at === -1) return 0;
  const port = Number(argv[at + 1]);
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw new Error(`--port ${argv[at + 1] ?? ""}: use 0..65535`);
  }
  return port;
}

/** Calls `stop` on SIGTERM, SIGINT, and (with `--exit-with-stdin` in `argv`) when stdin ends. */
export function stopOnSignals(argv: readonly string[], stop: () => void): void {
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
  if (argv.includes("--exit-with-stdin")) {
    process.stdin.on("end", stop);
    process.stdin.on("error", stop);
    process.stdin.resume();
  }
}
