/**
 * EtcdSpaceProbe: knows whether etcd takes writes, for health, as DataDirProbe does for a data
 * directory. etcd refuses every write once its database reached `--quota-backend-bytes` (the
 * NOSPACE alarm), until an operator compacts, defragments and disarms the alarm.
 *
 * Invariants:
 * - `writable` turns false at once when a store operation reports etcd out of space (`report`
 *   with an error whose kind, or whose cause's, is DiskFull: the etcd storage's NOSPACE); other
 *   failures are ignored. It turns true again only when a probe write succeeds.
 * - A probe is one put of the empty value to `<prefix>/.space-probe` (outside every partition and
 *   the partition markers, see storage/etcd.ts), without the ownership fence: it commits nothing
 *   a reader sees. Probes run only while not writable, one at a time, every `intervalMs` (timer
 *   unref'd), so a server whose etcd has space writes nothing for them.
 * - `onChange` is told every change of `writable`, with etcd's reason when it turns false.
 *
 * Usage:
 *   const probe = new EtcdSpaceProbe(client, "metadata", { intervalMs: 1000, onChange });
 *   storage = new WatchedStorage(storage, (err) => probe.report(err));
 */
import type { Etcd3 } from "etcd3";
import { environmentKindOf } from "../store/errors.js";
import { asEtcdError, isEtcdNoSpace } from "../store/storage/etcd.js";
import { type WritableChange, WriteProbe } from "../write-probe.js";

/** Name of the probe key under the prefix. */
export const SPACE_PROBE_KEY = ".space-probe";

/** Options of an EtcdSpaceProbe. */
export interface EtcdSpaceProbeOptions {
  /** Time between two probes while etcd refuses writes. */
  intervalMs: number;
  /** Longest a probe may take before it counts as failed. */
  timeoutMs: number;
  /** Called with the new state whenever `writable` changes. */
  onChange?: WritableChange;
}

/**
 * Follows whether etcd takes writes; see the module comment. `reason` is etcd's refusal, with
 * what to do.
 */
export class EtcdSpaceProbe extends WriteProbe {
  private timer: NodeJS.Timeout | undefined;
  private stopped = true;

  constructor(
    private readonly client: Etcd3,
    private readonly prefix: string,
    private readonly options: EtcdSpaceProbeOptions,
  ) {
    super(options.onChange);
  }

  /** Allows probing (there is nothing to probe until a report). */
  start(): void {
    this.stopped = false;
    if (!this.writable) this.schedule();
  }

  /** Stops probing. */
  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
    this.timer = undefined;
  }

  /**
   * Takes note of a failed store operation: when etcd refused it for lack of space, turns not
   * writable at once and probes every `intervalMs` until a probe succeeds. Anything else is
   * ignored.
   */
  report(err: unknown): void {
    if (environmentKindOf(err) !== "DiskFull") return;
    this.set(false, err instanceof Error ? err.message : String(err));
    this.schedule();
  }

  protected async attempt(): Promise<void> {
    try {
      await this.client
        .put(`${this.prefix}/${SPACE_PROBE_KEY}`)
        .value("")
        .options({ deadline: Date.now() + this.options.timeoutMs })
        .exec();
      this.set(true, undefined);
    } catch (err) {
      // A refusal for another reason (etcd not reachable) says nothing about its space: the
      // state stays.
      if (isEtcdNoSpace(err)) this.set(false, asEtcdError(err, "space probe").message);
    }
  }

  private schedule(): void {
    if (this.stopped || this.timer !== undefined) return;
    this.timer = setTimeout(() => {
      void this.probe().then((writable) => {
        this.timer = undefined;
        if (!writable) this.schedule();
      });
    }, this.options.intervalMs);
    this.timer.unref();
  }
}
