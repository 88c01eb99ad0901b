/**
 * WriteProbe: whether the storage under the server takes writes, as health and the
 * `metadata_data_dir_writable` gauge report it. Subclasses say what one probe is (a file written
 * and fsynced in the data directory, a put to etcd) and when probes run.
 *
 * Invariants:
 * - `writable` starts true and changes only through `set`; `onChange` is told every change,
 *   with the reason when it turns false.
 * - One probe at a time: `probe()` while one runs joins it.
 * - `attempt()` never rejects: it records its outcome through `set`, or leaves the state as it
 *   was when its failure says nothing about writability.
 */

/** Told when `writable` changes, with why when it turns false. */
export type WritableChange = (writable: boolean, reason: string | undefined) => void;

/** The state shared by the probes of a server's storage; see the module comment. */
export abstract class WriteProbe {
  private state = true;
  private why: string | undefined;
  private running: Promise<boolean> | undefined;

  protected constructor(private readonly onChange: WritableChange | undefined) {}

  /** True unless a write or a probe failed for lack of a writable store, and no probe has succeeded since. */
  get writable(): boolean {
    return this.state;
  }

  /** Why the store takes no writes, when it does not. */
  get reason(): string | undefined {
    return this.why;
  }

  /** Probes now (or joins the probe in progress); resolves with the new `writable`. */
  probe(): Promise<boolean> {
    this.running ??= this.attempt()
      .catch(() => undefined)
      .then(() => {
        this.running = undefined;
        return this.state;
      });
    return this.running;
  }

  /** One probe, recording its outcome through `set`; never rejects. */
  protected abstract attempt(): Promise<void>;

  protected set(writable: boolean, reason: string | undefined): void {
    const changed = writable !== this.state;
    this.state = writable;
    this.why = reason;
    if (changed) this.onChange?.(writable, reason);
  }
}
