/**
 * The tokens file: what it accepts, what it refuses (naming the entry and field, never echoing a
 * token), globs and access levels.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import {
  compileGlob,
  includesAccess,
  loadPolicy,
  loadTokenHashFile,
  PolicyError,
  parsePolicy,
} from "../../server/auth/policy.js";
import { tempDir } from "../support/temp-dir.js";

const hash = (token: string) => createHash("sha256").update(token).digest("hex");

function refuses(json: unknown, message: RegExp): void {
  assert.throws(
    () => parsePolicy(typeof json === "string" ? json : JSON.stringify(json), "tokens.json"),
    (err: unknown) => {
      assert.ok(err instanceof PolicyError);
      assert.match(err.message, message);
      return true;
    },
  );
}

test("a valid file gives token and certificate entries with their grants", () => {
  const policy = parsePolicy(
    JSON.stringify({
      tokens: [
        {
          name: "billing-writer",
          sha256: hash("s3cret"),
          grants: [{ partitions: "billing-*", access: "write" }],
        },
        { name: "ops", client_cert: "CN=ops.example.com", grants: [{ partitions: "*", access: "admin" }] },
        { name: "nobody", sha256: hash("other").toUpperCase(), grants: [] },
      ],
    }),
    "tokens.json",
  );
  assert.equal(policy.tokens.length, 2);
  const writer = policy.tokens[0];
  assert.equal(writer?.name, "billing-writer");
  assert.equal(writer?.sha256?.toString("hex"), hash("s3cret"));
  assert.equal(writer?.grants[0]?.access, "write");
  assert.ok(writer?.grants[0]?.matches("billing-eu"));
  assert.ok(!writer?.grants[0]?.matches("billing"));
  assert.equal(policy.tokens[1]?.sha256?.toString("hex"), hash("other"), "hex is case-insensitive");
  assert.equal(policy.certificates.get("CN=ops.example.com")?.name, "ops");
});

test("bad files are refused with the entry and field named", () => {
  refuses("{", /tokens\.json: not JSON/);
  refuses({ token: [] }, /expected \{"tokens"/);
  refuses({ tokens: [], extra: 1 }, /unknown field "extra"/);
  refuses({ tokens: [{ sha256: hash("a"), grants: [] }] }, /tokens\[0\]: "name"/);
  refuses(
    { tokens: [{ name: "a", grants: [] }] },
    /token "a": give exactly one of "sha256" and "client_cert"/,
  );
  refuses({ tokens: [{ name: "a", sha256: hash("a"), client_cert: "CN=a", grants: [] }] }, /exactly one of/);
  refuses({ tokens: [{ name: "a", sha256: hash("a"), grant: [] }] }, /token "a"|unknown field "grant"/);
  refuses({ tokens: [{ name: "a", sha256: hash("a") }] }, /"grants" must be a list/);
  refuses(
    { tokens: [{ name: "a", sha256: hash("a"), grants: [{ partitions: "p", access: "root" }] }] },
    /grants\[0\]: "access" must be one of read, write, admin/,
  );
  refuses(
    { tokens: [{ name: "a", sha256: hash("a"), grants: [{ partitions: "a/b", access: "read" }] }] },
    /"partitions" must be/,
  );
  refuses(
    { tokens: [{ name: "a", sha256: hash("a"), grants: [{ partitions: "p", access: "read", x: 1 }] }] },
    /unknown field "x"/,
  );
  refuses(
    {
      tokens: [
        { name: "a", sha256: hash("a"), grants: [] },
        { name: "a", sha256: hash("b"), grants: [] },
      ],
    },
    /token "a": name given twice/,
  );
  refuses(
    {
      tokens: [
        { name: "a", sha256: hash("a"), grants: [] },
        { name: "b", sha256: hash("a"), grants: [] },
      ],
    },
    /token "b": the same "sha256"/,
  );
  refuses({ tokens: [{ name: "c", client_cert: "ops", grants: [] }] }, /"client_cert" must be CN=name/);
});

test("a token pasted in place of its hash is refused without being echoed", () => {
  const token = "tok_live_0123456789abcdef";
  assert.throws(
    () => parsePolicy(JSON.stringify({ tokens: [{ name: "a", sha256: token, grants: [] }] }), "f"),
    (err: unknown) => {
      assert.ok(err instanceof PolicyError);
      assert.match(err.message, /64 hex digits/);
      assert.ok(!err.message.includes(token));
      return true;
    },
  );
});

test("globs: * matches any run, other characters are literal", () => {
  assert.ok(compileGlob("*")("anything"));
  assert.ok(compileGlob("a*")("a"));
  assert.ok(compileGlob("a*c")("abbbc"));
  assert.ok(!compileGlob("a*c")("abbbd"));
  assert.ok(compileGlob("exact")("exact"));
  assert.ok(!compileGlob("exact")("exact2"));
  assert.ok(compileGlob("*-eu")("billing-eu"));
  assert.ok(!compileGlob("*-eu")("billing-us"));
});

test("access levels include the lower ones", () => {
  assert.ok(includesAccess("admin", "write"));
  assert.ok(includesAccess("write", "read"));
  assert.ok(includesAccess("read", "read"));
  assert.ok(!includesAccess("read", "write"));
  assert.ok(!includesAccess("write", "admin"));
});

test("loadPolicy and loadTokenHashFile read files and name them in errors", async () => {
  const dir = await tempDir();
  try {
    const file = join(dir.path, "tokens.json");
    writeFileSync(file, JSON.stringify({ tokens: [] }));
    assert.equal(loadPolicy(file).tokens.length, 0);
    assert.throws(() => loadPolicy(join(dir.path, "missing.json")), /missing\.json: ENOENT/);
    const hashFile = join(dir.path, "metrics.sha256");
    writeFileSync(hashFile, `${hash("m")}  -\n`);
    assert.equal(loadTokenHashFile(hashFile).toString("hex"), hash("m"));
    writeFileSync(hashFile, "plain-token\n");
    assert.throws(
      () => loadTokenHashFile(hashFile),
      (err: unknown) => err instanceof PolicyError && !err.message.includes("plain-token"),
    );
  } finally {
    await dir.remove();
  }
});
