/**
 * promtool (from Debian's `prometheus` package) for the tests that check /metrics and the alert
 * rules. `promtoolMissing()` installs it once through scripts/install-promtool.sh when it is not
 * on PATH (a no-op when it is; CI runs the script beforehand) and returns why it cannot run, so
 * suites skip saying so.
 */
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";

const INSTALL = fileURLToPath(new URL("../../scripts/install-promtool.sh", import.meta.url));

let missing: string | undefined | null = null;

/** Why promtool cannot run here, or undefined once a `promtool` binary is on PATH. */
export function promtoolMissing(): string | undefined {
  if (missing !== null) return missing;
  const onPath = () => spawnSync("promtool", ["--version"], { encoding: "utf8" }).status === 0;
  if (!onPath()) {
    const install = spawnSync("bash", [INSTALL], { encoding: "utf8", timeout: 300_000 });
    if (install.status !== 0 || !onPath()) {
      missing = `promtool is not installed and scripts/install-promtool.sh could not install it: ${
        install.stderr.trim().split("\n").at(-1) ?? `exit ${install.status}`
      }`;
      return missing;
    }
  }
  missing = undefined;
  return missing;
}

/** Runs `promtool ...args` with `input` on stdin; returns its exit status and output. */
export function promtool(args: string[], input?: string): { status: number | null; output: string } {
  const run = spawnSync("promtool", args, { encoding: "utf8", input, timeout: 60_000 });
  return { status: run.status, output: `${run.stdout}${run.stderr}` };
}
