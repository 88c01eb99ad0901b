/**
 * WatchedStorage: wraps any Storage and hands every failure of an open, write, resize or sync to
 * an observer before rethrowing it unchanged (the server's data-directory probe uses it to turn
 * unhealthy at the first ENOSPC or EROFS, without waiting for its next probe).
 *
 * Invariant: results, errors and timing are those of the wrapped storage; the observer only
 * looks and must not throw.
 */
import {
  type Blob,
  type BlobWrite,
  type OpenedBlob,
  type OpenOptions,
  type Storage,
  StorageWrapper,
} from "./storage.js";

/** Storage wrapper reporting failures; see the module comment. */
export class WatchedStorage extends StorageWrapper {
  constructor(
    inner: Storage,
    private readonly onFailure: (err: unknown) => void,
  ) {
    super(inner);
  }

  async open(partition: string, name: Uint8Array, options?: OpenOptions): Promise<OpenedBlob> {
    try {
      const opened = await this.inner.open(partition, name, options);
      return { ...opened, blob: new WatchedBlob(opened.blob, this.onFailure) };
    } catch (err) {
      this.onFailure(err);
      throw err;
    }
  }
}

class WatchedBlob implements Blob {
  constructor(
    private readonly inner: Blob,
    private readonly onFailure: (err: unknown) => void,
  ) {}

  private async watch<T>(operation: Promise<T>): Promise<T> {
    try {
      return await operation;
    } catch (err) {
      this.onFailure(err);
      throw err;
    }
  }

  read(offset: number, length: number): Promise<Uint8Array> {
    return this.inner.read(offset, length);
  }

  write(offset: number, data: Uint8Array): Promise<void> {
    return this.watch(this.inner.write(offset, data));
  }

  writeAll(writes: readonly BlobWrite[]): Promise<void> {
    return this.watch(this.inner.writeAll(writes));
  }

  resize(length: number): Promise<void> {
    return this.watch(this.inner.resize(length));
  }

  sync(): Promise<void> {
    return this.watch(this.inner.sync());
  }

  length(): number {
    return this.inner.length();
  }

  close(): Promise<void> {
    return this.inner.close();
  }
}
