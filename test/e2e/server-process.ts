/**
 * ServerProcess: the metadata server run as a child process (`node --import tsx server/main.ts`,
 * or the CLI's `serve`) on a free loopback port, for tests that signal, kill and restart it.
 *
 * Invariants:
 * - The gRPC port is picked free before the start and passed with `--listen 127.0.0.1:PORT`;
 *   `start` resolves only once the server printed its listening line and the port accepts TCP
 *   connections. A port taken in between is retried with another one (at most 3 attempts).
 * - Every byte the child writes to stdout and stderr is kept (`output()`), so a failing test
 *   can show what the server said.
 * - `exited` settles when the child is gone; `stop()` kills it with SIGKILL if it still runs, so
 *   an `after` hook never leaves a server behind.
 *
 * Usage:
 *   const server = await ServerProcess.start({ dataDir });
 *   const client = new MetadataClient(server.address);
 *   const { code, signal } = await server.kill("SIGKILL");
 */
import { type ChildProcess, type SpawnOptionsWithStdioTuple, spawn } from "node:child_process";
import { once } from "node:events";
import { createConnection } from "node:net";
import { fileURLToPath } from "node:url";
import { freePort } from "../support/ports.js";

/** Root of the repository, the working directory of every child. */
export const REPO_ROOT = fileURLToPath(new URL("../../", import.meta.url));

/** How a child process ended. */
export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

/** Options of `ServerProcess.start`. */
export interface ServerProcessOptions {
  /** Data directory (`--data-dir`). */
  dataDir: string;
  /** More server flags, as on the command line. */
  flags?: string[];
  /** Script and leading arguments run by node; default `["server/main.ts"]`. */
  entry?: string[];
  /** Longest wait for the server to accept connections; default 30 s. */
  startTimeoutMs?: number;
  /** Most open file descriptors of the child (`ulimit -n`); the inherited limit by default. */
  fileLimit?: number;
}

/** Resolves once `port` on 127.0.0.1 accepts a TCP connection; false if it refused. */
async function accepts(port: number): Promise<boolean> {
  const socket = createConnection({ host: "127.0.0.1", port });
  try {
    await once(socket, "connect");
    return true;
  } catch {
    return false;
  } finally {
    socket.destroy();
  }
}

/** Last `max` characters of `text`. */
function tail(text: string, max = 4000): string {
  return text.length > max ? `...${text.slice(-max)}` : text;
}

/** A server child process; see the module comment. */
export class ServerProcess {
  private stdout = "";
  private stderr = "";
  /** Settles when the child has exited. */
  readonly exited: Promise<Exit>;

  private constructor(
    private readonly child: ChildProcess,
    /** The gRPC port. */
    readonly port: number,
  ) {
    child.stdout?.setEncoding("utf8");
    child.stderr?.setEncoding("utf8");
    child.stdout?.on("data", (chunk: string) => {
      this.stdout += chunk;
    });
    child.stderr?.on("data", (chunk: string) => {
      this.stderr += chunk;
    });
    this.exited = new Promise<Exit>((resolve) => {
      child.once("exit", (code, signal) => resolve({ code, signal }));
    });
  }

  /** Starts a server; see the module comment. @throws Error with the server's output if it fails */
  static async start(options: ServerProcessOptions): Promise<ServerProcess> {
    let lastError: unknown;
    for (let attempt = 0; attempt < 3; attempt++) {
      const port = await freePort();
      const args = [
        "--import",
        "tsx",
        ...(options.entry ?? ["server/main.ts"]),
        "--data-dir",
        options.dataDir,
        "--listen",
        `127.0.0.1:${port}`,
        "--metrics-listen",
        "127.0.0.1:0",
        ...(options.flags ?? []),
      ];
      const spawnOptions: SpawnOptionsWithStdioTuple<"ignore", "pipe", "pipe"> = {
        cwd: REPO_ROOT,
        stdio: ["ignore", "pipe", "pipe"],
      };
      const server = new ServerProcess(
        options.fileLimit === undefined
          ? spawn(process.execPath, args, spawnOptions)
          : spawn(
              "/bin/sh",
              ["-c", `ulimit -n ${options.fileLimit} && exec "$0" "$@"`, process.execPath, ...args],
              spawnOptions,
            ),
        port,
      );
      try {
        await server.waitUntilAccepting(options.startTimeoutMs ?? 30_000);
        return server;
      } catch (err) {
        lastError = err;
        await server.stop();
        // Only a port taken by someone else between freePort() and the bind is worth a retry.
        if (!/EADDRINUSE|No address added/i.test(server.output())) break;
      }
    }
    throw lastError;
  }

  /** "127.0.0.1:PORT" of the gRPC server. */
  get address(): string {
    return `127.0.0.1:${this.port}`;
  }

  /** The process id of the child. */
  get pid(): number | undefined {
    return this.child.pid;
  }

  /** The HTTP (metrics) port the server printed, if any. */
  get metricsPort(): number | undefined {
    const match = /metrics http:\/\/[^\s:]+:(\d+)\/metrics/.exec(this.stdout);
    return match === null ? undefined : Number(match[1]);
  }

  /** Everything the child wrote so far (tails of stdout and stderr), for failure messages. */
  output(): string {
    return `--- server stdout ---\n${tail(this.stdout)}\n--- server stderr ---\n${tail(this.stderr)}`;
  }

  /** Text the child wrote to stdout so far. */
  get stdoutText(): string {
    return this.stdout;
  }

  /** Sends `signal` and resolves when the child has exited. */
  async kill(signal: NodeJS.Signals): Promise<Exit> {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill(signal);
    return this.exited;
  }

  /** Sends `signal` without waiting for the exit (see `exited`). */
  signal(signal: NodeJS.Signals): void {
    this.child.kill(signal);
  }

  /** Kills the child with SIGKILL if it still runs and waits for its exit. */
  async stop(): Promise<void> {
    await this.kill("SIGKILL");
  }

  private async waitUntilAccepting(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    let exit: Exit | undefined;
    const noteExit = this.exited.then((e) => {
      exit = e;
    });
    while (Date.now() < deadline) {
      if (exit !== undefined) {
        throw new Error(`server exited before accepting (${JSON.stringify(exit)})\n${this.output()}`);
      }
      if (/listening on /.test(this.stdout) && (await accepts(this.port))) return;
      await Promise.race([noteExit, new Promise((resolve) => setTimeout(resolve, 25))]);
    }
    throw new Error(`server did not accept connections within ${timeoutMs} ms\n${this.output()}`);
  }
}
