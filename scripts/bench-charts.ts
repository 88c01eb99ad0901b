/**
 * Renders the JSON of `npm run bench:rpc -- --json` and `npm run bench:store -- --json` as SVG
 * bar charts for BENCHMARKS.md (`npm run bench:charts -- --rpc FILE --store FILE --out DIR`):
 *
 *   rpc-throughput.svg   calls/s of every cell: ours, etcd, and the no-op grpc-js and node:http2
 *                        servers (the ceilings of the transport), by workload and concurrency
 *   rpc-latency.svg      p50 and p99 per call of the same cells
 *   store-sync.svg       one sync() after N modified values, ours against the crate (median)
 *   store-init.svg       reopening a store of K keys, ours against the crate (median)
 *
 * Invariants:
 * - Output depends on the input only (no dates, no randomness): the same JSON gives the same
 *   bytes, so committed charts change only when their data does.
 * - Every bar carries its figure as text, so nothing is read off an axis; each chart's subtitle
 *   names the source file and whether it came from a --quick run.
 * - A cell without a result (an error, a skipped target) is drawn as "no result", never as 0.
 */
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { basename, join } from "node:path";
import { parseArgs } from "node:util";

/** One bar: its series (colour and legend entry), value, and the text drawn after it. */
export interface Bar {
  series: string;
  value: number | undefined;
  text: string;
}

/** A horizontal grouped bar chart: one group of bars per row. */
export interface BarChart {
  title: string;
  subtitle: string;
  /** Axis caption, with its unit. */
  axis: string;
  /** Bar lengths on a log scale (for figures spanning orders of magnitude); the caption says so. */
  log?: boolean;
  rows: { label: string; bars: Bar[] }[];
}

const PALETTE: Record<string, string> = {
  ours: "#2f6fdf",
  "ours (p50)": "#2f6fdf",
  "ours (p99)": "#8fb2ef",
  crate: "#e0792b",
  etcd: "#3f9f4f",
  noop: "#8c8c8c",
  http2: "#5a5a5a",
  p50: "#2f6fdf",
  p99: "#8fb2ef",
};
const FALLBACK = ["#9b59b6", "#c0392b", "#16a085", "#d35400"];

const xml = (text: string): string =>
  text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");

/** Renders `chart` as a standalone SVG document. */
export function renderBarChart(chart: BarChart): string {
  const labelWidth = 330;
  const plotWidth = 470;
  const textWidth = 120;
  const barHeight = 14;
  const rowGap = 10;
  const top = 64;
  const series = [...new Set(chart.rows.flatMap((row) => row.bars.map((bar) => bar.series)))];
  const colour = (name: string) =>
    PALETTE[name] ?? FALLBACK[series.indexOf(name) % FALLBACK.length] ?? "#000000";
  const values = chart.rows.flatMap((row) =>
    row.bars.flatMap((bar) => (bar.value === undefined ? [] : [bar.value])),
  );
  const max = Math.max(0, ...values);
  // On a log scale the axis starts at half the smallest figure, so the smallest bar stays visible.
  const low = Math.log10(Math.min(...values.filter((v) => v > 0)) / 2);
  const length = (value: number): number => {
    if (max <= 0 || value <= 0) return 0;
    if (chart.log !== true) return (value / max) * plotWidth;
    return ((Math.log10(value) - low) / (Math.log10(max) - low)) * plotWidth;
  };
  const out: string[] = [];
  let y = top;
  for (const row of chart.rows) {
    const rowHeight = row.bars.length * barHeight;
    out.push(
      `<text x="${labelWidth - 8}" y="${y + rowHeight / 2 + 4}" text-anchor="end">${xml(row.label)}</text>`,
    );
    for (const bar of row.bars) {
      if (bar.value === undefined) {
        out.push(`<text x="${labelWidth + 4}" y="${y + barHeight - 3}" class="none">no result</text>`);
      } else {
        const width = Math.max(1, length(bar.value));
        out.push(
          `<rect class="bar" x="${labelWidth}" y="${y}" width="${width.toFixed(1)}" height="${barHeight - 2}" fill="${colour(bar.series)}"><title>${xml(`${bar.series}: ${bar.text}`)}</title></rect>`,
          `<text x="${(labelWidth + width + 4).toFixed(1)}" y="${y + barHeight - 3}" class="value">${xml(bar.text)}</text>`,
        );
      }
      y += barHeight;
    }
    y += rowGap;
  }
  const legendY = y + 8;
  let legendX = labelWidth;
  const legend: string[] = [];
  for (const name of series) {
    legend.push(
      `<rect x="${legendX}" y="${legendY}" width="12" height="12" fill="${colour(name)}"/>`,
      `<text x="${legendX + 16}" y="${legendY + 10}">${xml(name)}</text>`,
    );
    legendX += 24 + name.length * 7;
  }
  const width = labelWidth + plotWidth + textWidth;
  const height = legendY + 32;
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="12">`,
    `<title>${xml(chart.title)}</title>`,
    "<style>.value{fill:#333;font-size:11px}.none{fill:#a00;font-style:italic}.sub{fill:#555}</style>",
    `<rect width="${width}" height="${height}" fill="#ffffff"/>`,
    `<text x="12" y="22" font-size="15" font-weight="bold">${xml(chart.title)}</text>`,
    `<text x="12" y="40" class="sub">${xml(chart.subtitle)}</text>`,
    `<line x1="${labelWidth}" y1="${top - 6}" x2="${labelWidth}" y2="${y - rowGap + 2}" stroke="#999"/>`,
    `<text x="${labelWidth}" y="${top - 10}" class="sub">${xml(chart.log === true ? `${chart.axis}, log scale` : chart.axis)}</text>`,
    ...out,
    ...legend,
    "</svg>",
    "",
  ].join("\n");
}

const count = (n: number): string => Math.round(n).toLocaleString("en-US");
const micros = (us: number): string => (us >= 1000 ? `${(us / 1000).toFixed(2)} ms` : `${us.toFixed(0)} us`);

/** The parts of the rpc benchmark's JSON the charts read. */
export interface RpcReport {
  quick: boolean;
  cells: {
    label: string;
    target: string;
    concurrency: number;
    inflight: number;
    authPass?: number;
    loadgen?: { ops_per_s: number; latency_us: { p50: number; p99: number } };
  }[];
}

/** The parts of the store benchmark's JSON the charts read. */
export interface StoreReport {
  quick: boolean;
  crateRelease: string;
  sync: { keys: number; modified: number; ours: { medianUs: number }; crate: { medianUs: number } | null }[];
  init: { keys: number; ours: { medianUs: number }; crate: { medianUs: number } | null }[];
}

const runKind = (quick: boolean) => (quick ? "--quick run" : "full run");

/** Throughput and latency charts of an rpc benchmark report (token-check cells left out). */
export function rpcCharts(report: RpcReport, source: string): Record<string, BarChart> {
  const cells = report.cells.filter((cell) => cell.authPass === undefined);
  const row = (cell: RpcReport["cells"][number]) =>
    `${cell.label} x${cell.inflight > 1 ? `${cell.concurrency}x${cell.inflight}` : cell.concurrency}`;
  const subtitle = `npm run bench:rpc -- --json (${runKind(report.quick)}), ${source}; same Go load generator for every server`;
  return {
    "rpc-throughput": {
      title: "RPC throughput: ours vs etcd and the no-op ceilings",
      subtitle,
      axis: "calls per second (higher is better)",
      rows: cells.map((cell) => ({
        label: row(cell),
        bars: [
          {
            series: cell.target,
            value: cell.loadgen?.ops_per_s,
            text: cell.loadgen === undefined ? "" : `${count(cell.loadgen.ops_per_s)}/s`,
          },
        ],
      })),
    },
    "rpc-latency": {
      title: "RPC latency per call: p50 and p99",
      subtitle,
      axis: "milliseconds (lower is better)",
      log: true,
      rows: cells.map((cell) => ({
        label: row(cell),
        bars: (["p50", "p99"] as const).map((q) => {
          const us = cell.loadgen?.latency_us[q];
          return {
            series: q,
            value: us === undefined ? undefined : us / 1000,
            text: us === undefined ? "" : micros(us),
          };
        }),
      })),
    },
  };
}

/** Sync and reopen charts of a store benchmark report, ours against the crate. */
export function storeCharts(report: StoreReport, source: string): Record<string, BarChart> {
  const subtitle = `npm run bench:store -- --json (${runKind(report.quick)}), ${source}; medians, commonware-storage ${report.crateRelease}`;
  const pair = (ours: { medianUs: number }, crate: { medianUs: number } | null): Bar[] => [
    { series: "ours", value: ours.medianUs, text: micros(ours.medianUs) },
    {
      series: "crate",
      value: crate?.medianUs,
      text: crate === null ? "" : micros(crate.medianUs),
    },
  ];
  return {
    "store-sync": {
      title: `One sync(): TypeScript port vs the Rust crate`,
      subtitle,
      axis: "microseconds per sync, flush included (lower is better)",
      rows: report.sync.map((cell) => ({
        label: `${count(cell.keys)} keys, ${count(cell.modified)} modified`,
        bars: pair(cell.ours, cell.crate),
      })),
    },
    "store-init": {
      title: "Reopen (restart): TypeScript port vs the Rust crate",
      subtitle,
      axis: "microseconds per open of existing blobs (lower is better)",
      log: true,
      rows: report.init.map((cell) => ({
        label: `${count(cell.keys)} keys`,
        bars: pair(cell.ours, cell.crate),
      })),
    },
  };
}

function main(): void {
  const { values } = parseArgs({
    options: {
      rpc: { type: "string" },
      store: { type: "string" },
      out: { type: "string", default: "docs/bench" },
    },
  });
  if (values.rpc === undefined && values.store === undefined) {
    console.error("usage: npm run bench:charts -- [--rpc rpc.json] [--store store.json] [--out DIR]");
    process.exit(2);
  }
  const charts: Record<string, BarChart> = {
    ...(values.rpc === undefined
      ? {}
      : rpcCharts(JSON.parse(readFileSync(values.rpc, "utf8")) as RpcReport, basename(values.rpc))),
    ...(values.store === undefined
      ? {}
      : storeCharts(JSON.parse(readFileSync(values.store, "utf8")) as StoreReport, basename(values.store))),
  };
  mkdirSync(values.out, { recursive: true });
  for (const [name, chart] of Object.entries(charts)) {
    const path = join(values.out, `${name}.svg`);
    writeFileSync(path, renderBarChart(chart));
    console.error(`wrote ${path}`);
  }
}

if (process.argv[1] !== undefined && import.meta.url.endsWith(basename(process.argv[1]))) main();
