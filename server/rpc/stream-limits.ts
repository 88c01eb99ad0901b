/**
 * StreamLimits: server-wide bounds on streaming calls, so that clients that open many streams, or
 * never read them, cannot exhaust the server's memory or starve other callers.
 *
 * - `open()` admits a streaming call (Keys, Write, ...) while fewer than `maxStreams` are open;
 *   beyond, the call is refused with RESOURCE_EXHAUSTED naming the limit.
 * - `reserve(bytes)` / `release(bytes)`: the bytes of response messages handed to the transport
 *   and not yet flushed to the connection, over every stream. A stream reserves a message's
 *   bytes before writing it and releases them when the transport has taken it; while the total
 *   is at `maxBufferedBytes`, writers wait (in arrival order). A reader that does not read thus
 *   holds at most the bytes it had reserved, and all of them together at most the limit; unary
 *   calls are never held back by it.
 *
 * Invariants:
 * - `buffered` never exceeds `maxBufferedBytes`, except by one message larger than the limit
 *   admitted alone when nothing else is buffered (so no message waits forever).
 * - Every reservation is released exactly once (the stream's `release` calls are idempotent per
 *   reservation through `Reservation`).
 */
import { EngineError } from "../engine/errors.js";

/** One reservation of buffered bytes; `release` frees it once, later calls do nothing. */
export interface Reservation {
  release(): void;
}

interface Waiter {
  bytes: number;
  resolve(reservation: Reservation): void;
  reject(err: unknown): void;
  signal: AbortSignal | undefined;
  onAbort: (() => void) | undefined;
}

/** See the module comment. */
export class StreamLimits {
  private streams = 0;
  private bufferedBytes = 0;
  private readonly waiters: Waiter[] = [];

  constructor(
    /** Most streaming calls open at once, server-wide. */
    readonly maxStreams: number,
    /** Most response bytes handed to the transport and not yet flushed, server-wide. */
    readonly maxBufferedBytes: number,
  ) {}

  /** Streaming calls open now. */
  get open(): number {
    return this.streams;
  }

  /** Response bytes buffered now. */
  get buffered(): number {
    return this.bufferedBytes;
  }

  /**
   * Admits one streaming call; returns the function that ends it (idempotent).
   * @throws EngineError LimitExceeded when `maxStreams` calls are open
   */
  admit(): () => void {
    if (this.streams >= this.maxStreams) {
      throw new EngineError(
        "LimitExceeded",
        `too many open streams: ${this.streams} (--max-streams ${this.maxStreams}); retry later`,
      );
    }
    this.streams++;
    let ended = false;
    return () => {
      if (ended) return;
      ended = true;
      this.streams--;
    };
  }

  /** Reserves `bytes` of the buffer when it has room and nobody waits; undefined otherwise. */
  tryReserve(bytes: number): Reservation | undefined {
    return this.waiters.length === 0 && this.fits(bytes) ? this.take(bytes) : undefined;
  }

  /**
   * Reserves `bytes` of the buffer, waiting while it is full. Rejects with the signal's reason
   * when `signal` aborts first (a cancelled stream stops waiting).
   */
  reserve(bytes: number, signal?: AbortSignal): Promise<Reservation> {
    if (this.waiters.length === 0 && this.fits(bytes)) return Promise.resolve(this.take(bytes));
    if (signal?.aborted) return Promise.reject(signal.reason);
    return new Promise<Reservation>((resolve, reject) => {
      const waiter: Waiter = { bytes, resolve, reject, signal, onAbort: undefined };
      if (signal !== undefined) {
        waiter.onAbort = () => {
          const index = this.waiters.indexOf(waiter);
          if (index !== -1) this.waiters.splice(index, 1);
          reject(signal.reason);
          this.wake();
        };
        signal.addEventListener("abort", waiter.onAbort, { once: true });
      }
      this.waiters.push(waiter);
    });
  }

  private fits(bytes: number): boolean {
    return this.bufferedBytes === 0 || this.bufferedBytes + bytes <= this.maxBufferedBytes;
  }

  private take(bytes: number): Reservation {
    this.bufferedBytes += bytes;
    let released = false;
    return {
      release: () => {
        if (released) return;
        released = true;
        this.bufferedBytes -= bytes;
        this.wake();
      },
    };
  }

  /** Admits waiting reservations, in order, while they fit. */
  private wake(): void {
    while (this.waiters.length > 0) {
      const next = this.waiters[0] as Waiter;
      if (!this.fits(next.bytes)) return;
      this.waiters.shift();
      if (next.signal !== undefined && next.onAbort !== undefined) {
        next.signal.removeEventListener("abort", next.onAbort);
      }
      next.resolve(this.take(next.bytes));
    }
  }
}
