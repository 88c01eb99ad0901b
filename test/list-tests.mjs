// Prints the test files `npm test` runs: every test/**/*.test.ts, sorted. Benchmarks live in
// test/bench as *.bench.ts and are never listed.
import { readdirSync } from "node:fs";
import { join } from "node:path";

function walk(dir) {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) return entry.name === "node_modules" ? [] : walk(path);
    return entry.name.endsWith(".test.ts") ? [path] : [];
  });
}

console.log(walk("test").sort().join("\n"));
