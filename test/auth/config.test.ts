/**
 * The security flags of config.ts: the non-loopback rule, flags that go together, and parsing.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { ConfigError, isLoopback, parseConfig } from "../../server/config.js";

function refused(argv: string[], message: RegExp, env: NodeJS.ProcessEnv = {}): void {
  assert.throws(
    () => parseConfig(argv, env),
    (err: unknown) => {
      assert.ok(err instanceof ConfigError);
      assert.match(err.message, message);
      assert.ok(!err.message.includes("\n"), "one line");
      return true;
    },
  );
}

test("without auth, a non-loopback address is refused in one line unless --allow-unauthenticated", () => {
  refused(
    ["--listen", "0.0.0.0:50051"],
    /^refusing to listen on 0\.0\.0\.0:50051 without authentication: give --auth-tokens or --tls-client-ca, or --allow-unauthenticated/,
  );
  refused(["--listen", "[::]:50051"], /refusing to listen on \[::\]:50051/);
  refused(["--listen", "db.example.com:1"], /refusing to listen/);
  refused(
    ["--metrics-listen", "0.0.0.0:9464"],
    /^refusing to serve \/metrics on 0\.0\.0\.0:9464 .*--metrics-token-file/,
  );
  assert.equal(
    parseConfig(["--listen", "0.0.0.0:1", "--allow-unauthenticated"], {}).allowUnauthenticated,
    true,
  );
  assert.equal(
    parseConfig(["--listen", "0.0.0.0:1"], { METADATA_ALLOW_UNAUTHENTICATED: "1" }).listen,
    "0.0.0.0:1",
  );
  assert.equal(
    parseConfig(["--listen", "0.0.0.0:1", "--auth-tokens", "t.json"], {}).authTokensFile,
    "t.json",
  );
  assert.equal(
    parseConfig(["--metrics-listen", "0.0.0.0:2", "--metrics-token-file", "m"], {}).metricsTokenFile,
    "m",
  );
  const tls = ["--tls-cert", "c", "--tls-key", "k", "--tls-client-ca", "ca"];
  assert.equal(parseConfig(["--listen", "10.0.0.1:1", ...tls], {}).tlsClientCaFile, "ca");
  // Loopback stays as today.
  assert.equal(parseConfig(["--listen", "localhost:1"], {}).listen, "localhost:1");
  assert.equal(parseConfig(["--listen", "[::1]:1"], {}).listen, "[::1]:1");
});

test("isLoopback", () => {
  for (const host of ["localhost", "127.0.0.1", "127.1.2.3", "::1", "0:0:0:0:0:0:0:1", "::ffff:127.0.0.1"]) {
    assert.ok(isLoopback(host), host);
  }
  for (const host of ["0.0.0.0", "::", "10.0.0.1", "example.com", "128.0.0.1", "localhost.example.com"]) {
    assert.ok(!isLoopback(host), host);
  }
});

test("security flags that go together, and their values", () => {
  refused(["--tls-client-ca", "ca"], /--tls-client-ca needs --tls-cert and --tls-key/);
  refused(["--metrics-tls-cert", "c"], /--metrics-tls-cert and --metrics-tls-key go together/);
  refused(["--reflection", "maybe"], /--reflection: "maybe" is not one of/);
  refused(["--allow-unauthenticated=yes"], /takes no value/);
  const defaults = parseConfig([], {});
  assert.equal(defaults.reflection, true);
  assert.equal(defaults.authTokensFile, undefined);
  assert.equal(defaults.allowUnauthenticated, false);
  assert.equal(parseConfig(["--reflection", "off"], {}).reflection, false);
  assert.deepEqual(
    parseConfig([], { METADATA_METRICS_TLS_CERT: "c", METADATA_METRICS_TLS_KEY: "k" }).metricsTls,
    {
      certFile: "c",
      keyFile: "k",
    },
  );
  assert.equal(parseConfig([], { METADATA_AUTH_TOKENS: "env.json" }).authTokensFile, "env.json");
});
