import type { Clock } from './clock.js';
import type { BatchPolicy } from './policy.js';

export interface BatchDriverOptions<T> {
  policy: BatchPolicy<T>;
  clock: Clock;
  /** Processes one batch. Must handle its own errors; a rejection is reported to onError. */
  run: (batch: T[]) => Promise<void>;
  /** Batches processed at once. While all slots are busy, arriving items keep filling the next batch. */
  concurrency?: number;
  onError?: (err: unknown) => void;
}

/**
 * Drives a BatchPolicy: owns the one timer, cuts batches when the policy says so and a slot is
 * free (the next batch forms while the current one runs, as Triton's scheduler does).
 */
export class BatchDriver<T> {
  private readonly policy: BatchPolicy<T>;
  private readonly clock: Clock;
  private readonly concurrency: number;
  private running = 0;
  private cancelTimer: (() => void) | null = null;
  private closing = false;
  private idleWaiters: (() => void)[] = [];

  constructor(private readonly options: BatchDriverOptions<T>) {
    this.policy = options.policy;
    this.clock = options.clock;
    this.concurrency = options.concurrency ?? 1;
  }

  /** Items waiting to be cut into a batch. */
  get waiting(): number {
    return this.policy.size;
  }

  get busy(): number {
    return this.running;
  }

  add(item: T, bytes = 0): void {
    this.policy.add(item, this.clock.now(), bytes);
    this.pump();
  }

  /** Flushes everything that waits, without waiting for the delay, and resolves when all ran. */
  async close(): Promise<void> {
    this.closing = true;
    this.pump();
    await this.idle();
  }

  /** Resolves once nothing waits and nothing runs. */
  idle(): Promise<void> {
    if (this.policy.size === 0 && this.running === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  private pump(): void {
    while (this.running < this.concurrency) {
      const wait =
        this.closing && this.policy.size > 0 ? 0 : this.policy.untilNext(this.clock.now());
      if (wait === null) break;
      if (wait > 0) {
        // The deadline is the oldest item's, so a timer already set is never late; one set for
        // an item flushed since merely wakes this up early. Not resetting it per add keeps
        // timer churn off the per-record path.
        this.cancelTimer ??= this.clock.setTimer(wait, () => {
          this.cancelTimer = null;
          this.pump();
        });
        break;
      }
      this.start(this.policy.flush());
    }
    this.notifyIfIdle();
  }

  private start(batch: T[]): void {
    this.running++;
    this.options
      .run(batch)
      .catch((err: unknown) => this.options.onError?.(err))
      .finally(() => {
        this.running--;
        this.pump();
      });
  }

  private clearTimer(): void {
    this.cancelTimer?.();
    this.cancelTimer = null;
  }

  private notifyIfIdle(): void {
    if (this.policy.size === 0) this.clearTimer(); // nothing waits: a pending wake-up is moot
    if (this.policy.size > 0 || this.running > 0) return;
    const waiters = this.idleWaiters;
    this.idleWaiters = [];
    for (const resolve of waiters) resolve();
  }
}
