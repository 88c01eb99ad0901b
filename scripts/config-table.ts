/**
 * Writes the README's configuration table from the flag table of server/config.ts, between the
 * markers `<!-- config-table:begin -->` and `<!-- config-table:end -->`.
 *
 *   npm run docs:config            rewrite README.md
 *   npm run docs:config -- --check exit 1 (and say so) when README.md is not current
 *
 * Invariant: the table is laid out as Biome formats Markdown (cells padded to the widest one), so
 * `npm run format` leaves it unchanged and the check compares text exactly.
 */
import { readFileSync, writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { defaultText, FLAGS, type FlagSpec, flagSynopsis } from "../server/config.js";

const README = fileURLToPath(new URL("../README.md", import.meta.url));
const BEGIN = "<!-- config-table:begin -->";
const END = "<!-- config-table:end -->";

const cell = (text: string): string => text.replaceAll("|", "\\|");

/** The Markdown table of every flag. */
export function configTable(): string {
  const rows = [
    ["flag", "env", "default", "unit", "meaning"],
    ...Object.values(FLAGS).map((flag: FlagSpec<unknown>) => [
      `\`${cell(flagSynopsis(flag))}\``,
      `\`${flag.env}\``,
      flag.defaultShown === undefined && flag.default !== undefined
        ? `\`${cell(flag.default)}\``
        : cell(defaultText(flag)),
      flag.unit ?? "",
      cell(flag.description),
    ]),
  ];
  const widths = (rows[0] as string[]).map((_, i) =>
    Math.max(...rows.map((row) => (row[i] as string).length)),
  );
  const line = (row: string[]) => `| ${row.map((text, i) => text.padEnd(widths[i] as number)).join(" | ")} |`;
  const [head, ...body] = rows as [string[], ...string[][]];
  return [line(head), `| ${widths.map((w) => "-".repeat(w)).join(" | ")} |`, ...body.map(line)].join("\n");
}

/** README.md with its configuration table replaced by `configTable()`. @throws Error without markers */
export function readmeWithTable(readme: string): string {
  const begin = readme.indexOf(BEGIN);
  const end = readme.indexOf(END);
  if (begin === -1 || end < begin) throw new Error(`README.md has no ${BEGIN} ... ${END} section`);
  return `${readme.slice(0, begin + BEGIN.length)}\n\n${configTable()}\n\n${readme.slice(end)}`;
}

if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === process.argv[1]) {
  const readme = readFileSync(README, "utf8");
  const updated = readmeWithTable(readme);
  if (process.argv.includes("--check")) {
    if (updated !== readme) {
      console.error("README.md: the configuration table is not current: run npm run docs:config");
      process.exit(1);
    }
  } else if (updated !== readme) {
    writeFileSync(README, updated);
    console.log("README.md: configuration table updated");
  }
}
