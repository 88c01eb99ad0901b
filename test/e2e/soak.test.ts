/**
 * A short fault campaign (test/soak/fault-campaign.ts) in the test suite: SOAK_CYCLES cycles
 * (default 5, which meets each fault once: ENOSPC, read-only remount, one blob and both blobs
 * damaged, plain SIGKILL). `npm run soak` runs the long one. Without root the filesystem faults
 * become plain kills, as the summary says.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { runCampaign, summary } from "../soak/fault-campaign.js";
import { testSeed } from "../support/rng.js";

test("fault campaign: nothing acknowledged is lost, every fault answers as documented", async () => {
  const seed = testSeed();
  const cycles = Number(process.env.SOAK_CYCLES ?? 5);
  const result = await runCampaign({ cycles, seed });
  const text = summary(result, seed);
  console.log(text);
  assert.equal(result.cycles, cycles, text);
  assert.equal(result.lost, 0, `${text}\n${result.problems.join("\n")}`);
  assert.equal(result.tornCommits, 0, text);
  assert.deepEqual(result.problems, [], text);
  assert.ok(result.writesAcknowledged > 0 && result.writesChecked > 0, text);
  if (result.filesystemFaults && cycles >= 4) {
    assert.equal(result.unhealthyWhileFull, result.faults.enospc, text);
    assert.equal(result.refusedReadOnly, result.faults.readonly, text);
    assert.ok((result.statuses.RESOURCE_EXHAUSTED ?? 0) > 0, text);
  }
  if (cycles >= 4) {
    assert.equal(result.dataLossRecovered, result.faults["corrupt-both"], text);
    assert.ok((result.statuses.DATA_LOSS ?? 0) > 0, text);
  }
  assert.equal(result.statuses.INTERNAL, undefined, text);
  // A creation cut short by the full disk heals at the next open.
  assert.equal(result.brokenCreations, 0, text);
});
