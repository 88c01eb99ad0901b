/**
 * The monitoring files in deploy/: the Prometheus alert rules pass `promtool check rules` and
 * their unit tests (`promtool test rules`; skipped, saying why, when promtool cannot be
 * installed), and every metric the rules and the Grafana dashboard query is one a real server
 * exposes, so a renamed metric cannot leave a panel or an alert silently empty.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";
import { startTestServer, type TestServer } from "../support/in-process-server.js";
import { promtool, promtoolMissing } from "../support/promtool.js";
import { utf8 } from "../support/store-helpers.js";

const deploy = (path: string) => fileURLToPath(new URL(`../../deploy/${path}`, import.meta.url));
const RULES = deploy("prometheus/alerts.yml");
const RULES_TEST = deploy("prometheus/alerts.test.yml");
const DASHBOARD = deploy("grafana/metadata.json");

interface Panel {
  id: number;
  type: string;
  title: string;
  targets?: { expr: string; refId: string }[];
}

let server: TestServer;
let exposed: Set<string>;

before(async () => {
  server = await startTestServer();
  await server.client.put(utf8("k"), utf8("v"));
  for await (const _ of server.client.keys()) {
    // drain the stream
  }
  const scrape = await server.metrics();
  exposed = new Set([...scrape.matchAll(/^# TYPE (\S+) /gm)].map((m) => m[1] ?? ""));
});
after(async () => {
  await server?.stop();
});

/** Names of this service's metric families (histogram series mapped to their family) in `expr`. */
function metricsIn(expr: string): string[] {
  return [...expr.matchAll(/\b((?:metadata|grpc_server)_[a-z_]+)/g)].map((m) =>
    (m[1] ?? "").replace(/_(bucket|sum|count)$/, ""),
  );
}

test("every metric the alert rules query is exposed by the server", () => {
  const exprs = [
    ...readFileSync(RULES, "utf8").matchAll(/^\s+expr: (?:>-\n)?([\s\S]*?)\n\s+(?:for|labels):/gm),
  ];
  assert.equal(exprs.length, 9);
  for (const [, expr] of exprs) {
    const names = metricsIn(expr ?? "");
    assert.ok(names.length > 0, `no metric in ${expr}`);
    for (const name of names) assert.ok(exposed.has(name), `${name} (in ${expr}) is not exposed`);
  }
});

test("every Grafana panel queries metrics the server exposes", () => {
  const dashboard = JSON.parse(readFileSync(DASHBOARD, "utf8")) as { uid: string; panels: Panel[] };
  assert.equal(dashboard.uid, "commonware-metadata");
  const ids = dashboard.panels.map((panel) => panel.id);
  assert.equal(new Set(ids).size, ids.length, "panel ids are unique");
  const graphs = dashboard.panels.filter((panel) => panel.type !== "row");
  assert.ok(graphs.length >= 10);
  for (const panel of graphs) {
    assert.ok(panel.targets !== undefined && panel.targets.length > 0, `${panel.title} has queries`);
    for (const { expr } of panel.targets) {
      const names = metricsIn(expr);
      assert.ok(names.length > 0, `${panel.title}: no metric in ${expr}`);
      for (const name of names) assert.ok(exposed.has(name), `${panel.title}: ${name} is not exposed`);
    }
  }
});

test("promtool check rules accepts the alert rules", (t) => {
  const missing = promtoolMissing();
  if (missing !== undefined) return t.skip(missing);
  const result = promtool(["check", "rules", RULES]);
  assert.equal(result.status, 0, result.output);
  assert.match(result.output, /SUCCESS: 9 rules found/);
});

test("promtool test rules: each alert fires when it should and only then", (t) => {
  const missing = promtoolMissing();
  if (missing !== undefined) return t.skip(missing);
  const result = promtool(["test", "rules", RULES_TEST]);
  assert.equal(result.status, 0, result.output);
  assert.match(result.output, /SUCCESS/);
});
