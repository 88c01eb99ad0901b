/**
 * The CLI against secured servers: `--token` and METADATA_TOKEN on a server with --auth-tokens
 * (no token: UNAUTHENTICATED, exit 1), and `--cacert --cert --key` on a mutual-TLS server.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { parseCommandLine, UsageError } from "../../server/cli.js";
import { type CliRun, runCli } from "../support/cli-process.js";
import { startTestServer, type TestServer } from "../support/in-process-server.js";
import { createTestPki, type TestPki } from "../support/test-pki.js";

const TOKEN = "cli-writer-token";

let pki: TestPki;
let tokensServer: TestServer;
let mtlsServer: TestServer;

before(async () => {
  pki = await createTestPki();
  const tokens = join(pki.dir, "tokens.json");
  writeFileSync(
    tokens,
    JSON.stringify({
      tokens: [
        {
          name: "cli",
          sha256: createHash("sha256").update(TOKEN).digest("hex"),
          grants: [{ partitions: "*", access: "write" }],
        },
      ],
    }),
  );
  tokensServer = await startTestServer(["--auth-tokens", tokens]);
  mtlsServer = await startTestServer([
    "--tls-cert",
    pki.server.cert,
    "--tls-key",
    pki.server.key,
    "--tls-client-ca",
    pki.ca.cert,
  ]);
});
after(async () => {
  await tokensServer?.stop();
  await mtlsServer?.stop();
  await pki?.remove();
});

function cli(args: string[], env: NodeJS.ProcessEnv = {}): Promise<CliRun> {
  return runCli(args, { env: { METADATA_TOKEN: "", ...env }, timeoutMs: 30_000 });
}

test("--token and METADATA_TOKEN authenticate; without a token the call is refused", async () => {
  const address = ["--address", tokensServer.address];
  const refused = await cli(["put", "k", "v", ...address]);
  assert.equal(refused.code, 1);
  assert.match(refused.stderr, /^error: UNAUTHENTICATED: missing credentials/);
  const put = await cli(["put", "k", "v", "--token", TOKEN, ...address]);
  assert.equal(put.code, 0, put.stderr);
  assert.match(put.stdout, /^version: \d+/);
  const get = await cli(["get", "k", ...address], { METADATA_TOKEN: TOKEN });
  assert.deepEqual([get.code, get.stdout], [0, "v\n"]);
  const wrong = await cli(["get", "k", "--token", "nope", ...address]);
  assert.match(wrong.stderr, /^error: UNAUTHENTICATED: unknown bearer token/);
});

test("--cacert --cert --key speak mutual TLS", async () => {
  const client = pki.issueClient("cli-client", "/CN=cli", pki.ca);
  const tls = ["--address", `localhost:${mtlsServer.service.port}`, "--cacert", pki.ca.cert];
  const put = await cli(["put", "k", "tls", ...tls, "--cert", client.cert, "--key", client.key]);
  assert.equal(put.code, 0, put.stderr);
  const noCert = await cli(["get", "k", ...tls, "--deadline-ms", "5000"]);
  assert.equal(noCert.code, 1);
  assert.match(noCert.stderr, /^error: UNAVAILABLE/);
});

test("the security options parse, and --cert needs --key", () => {
  const command = parseCommandLine(
    ["get", "k", "--token", "t", "--cacert", "ca.pem", "--cert", "c", "--key", "k"],
    {},
  );
  assert.ok("options" in command);
  assert.equal(command.options.token, "t");
  assert.equal(command.options.cacert, "ca.pem");
  assert.equal(parseCommandLine(["sync"], { METADATA_TOKEN: "env" }).name, "sync");
  const fromEnv = parseCommandLine(["sync"], { METADATA_TOKEN: "env" });
  assert.ok("options" in fromEnv && fromEnv.options.token === "env");
  assert.throws(() => parseCommandLine(["get", "k", "--cert", "c"], {}), UsageError);
});
