/**
 * runCli: the CLI (server/cli.ts through tsx) as a child process, for the CLI tests. It is
 * asynchronous, so an in-process server keeps serving while the CLI talks to it.
 *
 * Usage:
 *   const run = await runCli(["get", "k"], { env: { METADATA_ADDRESS: address } });
 *   assert.equal(run.code, 0);
 */
import { spawn } from "node:child_process";

const REPO_ROOT = new URL("../../", import.meta.url);

/** How a CLI run ended. */
export interface CliRun {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Options of `runCli`. */
export interface CliOptions {
  /** Added to this process's environment. */
  env?: NodeJS.ProcessEnv;
  /**
   * Written to stdin chunk by chunk, `pauseMs` apart; a function is awaited instead of written.
   * stdin is closed after the last chunk (at once when empty).
   */
  input?: (string | Uint8Array | (() => Promise<void>))[];
  pauseMs?: number;
  /** The CLI is killed after this long (default 60 s). */
  timeoutMs?: number;
}

/** Runs the CLI with `args`; resolves with its exit status and output. */
export async function runCli(args: string[], options: CliOptions = {}): Promise<CliRun> {
  const child = spawn(process.execPath, ["--import", "tsx", "server/cli.ts", ...args], {
    cwd: REPO_ROOT,
    env: { ...process.env, ...options.env },
    stdio: ["pipe", "pipe", "pipe"],
  });
  let stdout = "";
  let stderr = "";
  child.stdout.setEncoding("utf8").on("data", (chunk: string) => {
    stdout += chunk;
  });
  child.stderr.setEncoding("utf8").on("data", (chunk: string) => {
    stderr += chunk;
  });
  // A CLI that exits before reading all of its input must not fail the test with EPIPE.
  child.stdin.on("error", () => undefined);
  const timer = setTimeout(() => child.kill("SIGKILL"), options.timeoutMs ?? 60_000);
  try {
    const exited = new Promise<number | null>((resolve, reject) => {
      child.once("error", reject);
      child.once("close", (exitCode) => resolve(exitCode));
    });
    for (const [i, chunk] of (options.input ?? []).entries()) {
      if (i > 0 && (options.pauseMs ?? 0) > 0)
        await new Promise((resolve) => setTimeout(resolve, options.pauseMs));
      if (typeof chunk === "function") await chunk();
      else child.stdin.write(chunk);
    }
    child.stdin.end();
    return { code: await exited, stdout, stderr };
  } finally {
    clearTimeout(timer);
  }
}
