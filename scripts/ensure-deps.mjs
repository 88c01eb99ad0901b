// Installs the npm dependencies from package-lock.json when they are missing or older than the
// lock file, so that `npm start` and `npm test` work on a fresh clone as the only commands.
import { execFileSync } from "node:child_process";
import { existsSync, statSync } from "node:fs";

const installed = "node_modules/.package-lock.json";
const stale = !existsSync(installed) || statSync(installed).mtimeMs < statSync("package-lock.json").mtimeMs;
if (stale) {
  console.error("installing npm dependencies (npm ci)...");
  execFileSync("npm", ["ci", "--no-audit", "--no-fund"], { stdio: "inherit" });
}
