export interface BatchPolicyOptions {
  /** Flush as soon as this many items wait. */
  maxBatchSize: number;
  /** Flush once the oldest waiting item has waited this long. */
  maxDelayMs: number;
  /** Flush once the waiting items add up to this many bytes (optional). */
  maxBatchBytes?: number;
}

interface Waiting<T> {
  item: T;
  at: number;
  bytes: number;
}

/**
 * When to cut a batch, as a pure function of what waits and of `now`. It owns no timer: the
 * driver asks `untilNext(now)` and sleeps that long, so the rules are testable without time.
 */
export class BatchPolicy<T> {
  private readonly waiting: Waiting<T>[] = [];
  private waitingBytes = 0;

  constructor(private readonly options: BatchPolicyOptions) {
    if (!(options.maxBatchSize >= 1)) throw new RangeError('maxBatchSize must be at least 1');
    if (!(options.maxDelayMs >= 0)) throw new RangeError('maxDelayMs must be at least 0');
  }

  get size(): number {
    return this.waiting.length;
  }

  get bytes(): number {
    return this.waitingBytes;
  }

  add(item: T, now: number, bytes = 0): void {
    this.waiting.push({ item, at: now, bytes });
    this.waitingBytes += bytes;
  }

  isFull(): boolean {
    const { maxBatchSize, maxBatchBytes } = this.options;
    return (
      this.waiting.length >= maxBatchSize ||
      (maxBatchBytes !== undefined && this.waitingBytes >= maxBatchBytes)
    );
  }

  /** Milliseconds until a batch is due: 0 means now, null means nothing waits. */
  untilNext(now: number): number | null {
    const oldest = this.waiting[0];
    if (!oldest) return null;
    if (this.isFull()) return 0;
    return Math.max(0, oldest.at + this.options.maxDelayMs - now);
  }

  /** Takes the oldest items, up to maxBatchSize (and maxBatchBytes, keeping at least one). */
  flush(): T[] {
    const { maxBatchSize, maxBatchBytes } = this.options;
    let count = 0;
    let bytes = 0;
    for (const waiting of this.waiting) {
      if (count >= maxBatchSize) break;
      if (count > 0 && maxBatchBytes !== undefined && bytes + waiting.bytes > maxBatchBytes) break;
      count++;
      bytes += waiting.bytes;
    }
    this.waitingBytes -= bytes;
    return this.waiting.splice(0, count).map((w) => w.item);
  }
}
