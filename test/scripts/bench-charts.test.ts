/**
 * The benchmark chart renderer (scripts/bench-charts.ts): bars proportional to the figures (or on
 * a log scale when asked), every figure written out, a missing result shown as such and never as
 * 0, text escaped for XML, and the same input giving the same bytes.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { type BarChart, renderBarChart, rpcCharts, storeCharts } from "../../scripts/bench-charts.js";

const widths = (svg: string): number[] =>
  [...svg.matchAll(/<rect class="bar" x="330" y="\d+" width="([\d.]+)"/g)].map((m) => Number(m[1]));

test("bars are proportional to their figures and carry them as text", () => {
  const chart: BarChart = {
    title: "t",
    subtitle: "s",
    axis: "a",
    rows: [
      {
        label: "row",
        bars: [
          { series: "ours", value: 200, text: "200 us" },
          { series: "crate", value: 100, text: "100 us" },
        ],
      },
    ],
  };
  const svg = renderBarChart(chart);
  assert.deepEqual(widths(svg), [470, 235]);
  assert.match(svg, />200 us</);
  assert.match(svg, />100 us</);
  assert.equal(renderBarChart(chart), svg);
  const log = widths(renderBarChart({ ...chart, log: true }));
  // Axis from 50 (half the smallest): log(200/50) / log(200/50) and log(100/50) / log(200/50).
  assert.deepEqual(log, [470, 235]);
  assert.match(renderBarChart({ ...chart, log: true }), /a, log scale/);
});

test("a missing result reads 'no result', and labels are escaped", () => {
  const charts = storeCharts(
    {
      quick: true,
      crateRelease: "2026.4.0",
      sync: [{ keys: 100, modified: 1, ours: { medianUs: 150 }, crate: null }],
      init: [],
    },
    "a<b>.json",
  );
  const svg = renderBarChart(charts["store-sync"] as BarChart);
  assert.match(svg, /no result/);
  assert.match(svg, /a&lt;b&gt;\.json/);
  assert.match(svg, /--quick run/);
  assert.equal(widths(svg).length, 1);
});

test("rpc charts leave out the token-check cells and name concurrency", () => {
  const loadgen = { ops_per_s: 1000, latency_us: { p50: 500, p99: 2000 } };
  const charts = rpcCharts(
    {
      quick: false,
      cells: [
        { label: "ours Put durable", target: "ours", concurrency: 64, inflight: 1, loadgen },
        {
          label: "ours Put durable auth on #1",
          target: "ours-auth",
          concurrency: 64,
          inflight: 1,
          authPass: 1,
          loadgen,
        },
        { label: "ours Write stream Put durable", target: "ours", concurrency: 4, inflight: 16 },
      ],
    },
    "rpc.json",
  );
  const throughput = charts["rpc-throughput"] as BarChart;
  assert.deepEqual(
    throughput.rows.map((row) => row.label),
    ["ours Put durable x64", "ours Write stream Put durable x4x16"],
  );
  assert.match(renderBarChart(throughput), /1,000\/s/);
  assert.match(renderBarChart(throughput), /no result/);
});
