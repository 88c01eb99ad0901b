/**
 * `npm start` under a supervisor: the PID a supervisor holds is npm's, so a SIGTERM to that PID
 * must stop the server itself (cleanly, exit 0) and free its port, leaving no process behind.
 * `npm start` builds dist/ first when a source is newer than the last build.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { once } from "node:events";
import { readdirSync, readFileSync } from "node:fs";
import { after, before, test } from "node:test";
import { freePort, isPortFree } from "../support/ports.js";
import { tempDir } from "../support/temp-dir.js";
import { REPO_ROOT } from "./server-process.js";

let dataDir: { path: string; remove(): Promise<void> };
before(async () => {
  dataDir = await tempDir("metadata-npm-start-");
});
after(async () => {
  await dataDir.remove();
});

/** Every process whose parent chain leads to `root` (Linux /proc). */
function descendants(root: number): number[] {
  const parents = new Map<number, number>();
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      // Fields after the command name, which is in parentheses and may hold spaces.
      const stat = readFileSync(`/proc/${entry}/stat`, "utf8");
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      parents.set(Number(entry), Number(fields[1]));
    } catch {
      // The process ended while we looked.
    }
  }
  const found: number[] = [];
  let frontier = [root];
  while (frontier.length > 0) {
    const next = [...parents].filter(([, parent]) => frontier.includes(parent)).map(([pid]) => pid);
    found.push(...next);
    frontier = next;
  }
  return found;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

test("SIGTERM to the npm start process stops the server and frees its port", async (t) => {
  const port = await freePort();
  const npm = spawn(
    "npm",
    ["start", "--", "--data-dir", dataDir.path, "--listen", `127.0.0.1:${port}`, "--metrics-listen", "off"],
    { cwd: REPO_ROOT, stdio: ["ignore", "pipe", "pipe"] },
  );
  // Whatever outlives a failed test is killed, so that a failure cannot hang the run.
  let children: number[] = [];
  t.after(() => {
    for (const pid of [...children, ...descendants(npm.pid as number)]) {
      if (alive(pid)) process.kill(pid, "SIGKILL");
    }
    npm.kill("SIGKILL");
  });
  let output = "";
  npm.stdout.setEncoding("utf8").on("data", (chunk: string) => {
    output += chunk;
  });
  npm.stderr.setEncoding("utf8").on("data", (chunk: string) => {
    output += chunk;
  });
  const exited = once(npm, "exit") as Promise<[number | null, NodeJS.Signals | null]>;
  const deadline = Date.now() + 60_000;
  while (!output.includes(`listening on 127.0.0.1:${port}`)) {
    assert.ok(Date.now() < deadline, `npm start did not print its listening line\n${output}`);
    assert.equal(npm.exitCode, null, `npm start exited early\n${output}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  children = descendants(npm.pid as number);
  assert.ok(children.length > 0, "the server runs under npm");
  assert.equal(await isPortFree(port), false, "the server holds its port");

  npm.kill("SIGTERM");
  const timer = setTimeout(() => npm.kill("SIGKILL"), 20_000);
  const [code, signal] = await exited;
  clearTimeout(timer);
  assert.deepEqual({ code, signal }, { code: 0, signal: null }, output);
  assert.match(output, /SIGTERM: finishing in-flight calls/);
  assert.match(output, /\nstopped\n/);
  // The server was the process that got the signal, so nothing outlives npm.
  for (const pid of children) assert.equal(alive(pid), false, `process ${pid} still runs\n${output}`);
  assert.equal(await isPortFree(port), true, "the port is free again");
});
