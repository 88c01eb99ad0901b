/**
 * The TypeScript client as a package of its own: `npm pack` in clients/ts, the tarball installed
 * into a fresh project outside the repository (dependencies from the local npm cache when there,
 * else the registry), type-checked there against its declarations, and used to call a real server.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { promisify } from "node:util";
import { REPO_ROOT } from "../e2e/server-process.js";
import { startTestServer, type TestServer } from "../support/in-process-server.js";
import { tempDir } from "../support/temp-dir.js";

const run = promisify(execFile);

let server: TestServer;
let project: { path: string; remove(): Promise<void> };
before(async () => {
  server = await startTestServer();
  project = await tempDir("metadata-client-package-");
});
after(async () => {
  await server.stop();
  await project.remove();
});

const SCRIPT = `import { Durability, MetadataClient } from "commonware-metadata-client";

const client = new MetadataClient(process.argv[2]);
const key = new TextEncoder().encode("from-package");
const { version } = await client.put(key, new TextEncoder().encode("hello"), { durability: Durability.DURABLE });
const value = await client.get(key);
const keys = [];
for await (const entry of client.keys({ prefix: key })) keys.push(new TextDecoder().decode(entry.key));
client.close();
console.log(JSON.stringify({ version: String(version), value: new TextDecoder().decode(value), keys }));
`;

test("the packed client installs into another project, type-checks and calls a real server", async () => {
  const packed = await run("npm", ["pack", "--json", "--pack-destination", project.path], {
    cwd: join(REPO_ROOT, "clients/ts"),
  });
  const [{ filename, files }] = JSON.parse(packed.stdout) as [
    { filename: string; files: { path: string }[] },
  ];
  const paths = files.map((f) => f.path);
  assert.ok(paths.includes("dist/index.js") && paths.includes("dist/index.d.ts"), paths.join(", "));
  assert.ok(!paths.some((p) => p.endsWith(".ts") && !p.endsWith(".d.ts")), "no TypeScript sources");

  await writeFile(
    join(project.path, "package.json"),
    JSON.stringify({ name: "try-client", private: true, type: "module" }),
  );
  await run(
    "npm",
    [
      "install",
      "--prefer-offline",
      "--no-audit",
      "--no-fund",
      "--ignore-scripts",
      join(project.path, filename),
    ],
    { cwd: project.path },
  );

  // Its declarations are enough for a strict TypeScript user.
  await writeFile(
    join(project.path, "try.ts"),
    SCRIPT.replaceAll("const keys = []", "const keys: string[] = []"),
  );
  await writeFile(
    join(project.path, "tsconfig.json"),
    JSON.stringify({
      compilerOptions: {
        strict: true,
        noEmit: true,
        target: "es2022",
        module: "nodenext",
        moduleResolution: "nodenext",
        skipLibCheck: true,
        types: [],
      },
      files: ["try.ts"],
    }),
  );
  await run(join(REPO_ROOT, "node_modules/.bin/tsc"), ["-p", "."], { cwd: project.path });

  await writeFile(join(project.path, "try.mjs"), SCRIPT);
  const { stdout } = await run(process.execPath, ["try.mjs", server.address], { cwd: project.path });
  const result = JSON.parse(stdout) as { version: string; value: string; keys: string[] };
  assert.deepEqual({ value: result.value, keys: result.keys }, { value: "hello", keys: ["from-package"] });
  assert.ok(BigInt(result.version) > 0n, "a durable put answers with its sync's version");
});
