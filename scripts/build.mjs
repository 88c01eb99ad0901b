// Compiles the server and the TypeScript client to dist/ (tsc -p tsconfig.build.json), for
// `npm run build`, and before `npm start` and `npm run cli` with --if-stale.
//
//   node scripts/build.mjs              clean dist/ and compile
//   node scripts/build.mjs --if-stale   compile only when a source is newer than the last build
//
// Invariants: dist/ is emptied before each compile, so it never holds the output of a deleted
// source; dist/.build-stamp is written only after a successful compile, so an interrupted or
// failed build is redone by the next --if-stale.
import { execFileSync } from "node:child_process";
import { existsSync, readdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("..", import.meta.url));
const stamp = join(root, "dist", ".build-stamp");
const inputs = ["server", "clients/ts", "tsconfig.json", "tsconfig.build.json", "package-lock.json"];

/** Newest modification time (ms) of the TypeScript sources and build settings. */
function newestInput() {
  let newest = 0;
  const visit = (path) => {
    const info = statSync(path);
    if (info.isDirectory()) {
      for (const entry of readdirSync(path)) {
        if (entry !== "node_modules" && entry !== "dist") visit(join(path, entry));
      }
    } else if (/\.(ts|json)$/.test(path)) {
      newest = Math.max(newest, info.mtimeMs);
    }
  };
  for (const input of inputs) visit(join(root, input));
  return newest;
}

if (process.argv.includes("--if-stale") && existsSync(stamp) && statSync(stamp).mtimeMs >= newestInput()) {
  process.exit(0);
}
console.error("building dist/ (tsc -p tsconfig.build.json)");
rmSync(join(root, "dist"), { recursive: true, force: true });
try {
  execFileSync(join(root, "node_modules", ".bin", "tsc"), ["-p", "tsconfig.build.json"], {
    cwd: root,
    stdio: "inherit",
  });
} catch {
  console.error("build failed");
  process.exit(1);
}
writeFileSync(stamp, `${new Date().toISOString()}\n`);
