/**
 * A ModelRunner whose runner can be replaced while it serves (hot swap).
 *
 * Predicts, and leases (one per batch, see ModelLease), go to the current runner and are counted
 * per runner. `swap(next)` makes `next` current at once, atomically for every later batch;
 * batches already running finish on the old runner, which is disposed once its count reaches 0.
 * `info` and `concurrency` are the current runner's.
 */
import { StreamscoreError } from '../errors.js';
import type { BatchOutputs, ModelInfo, ModelLease, ModelRunner, PackedBatch } from './types.js';

interface Slot {
  runner: ModelRunner;
  inFlight: number;
  retired: boolean;
  disposed?: Promise<void>;
}

export interface SwappableModelOptions {
  /** Called when disposing a retired runner fails (it is dropped anyway). */
  onDisposeError?: (error: unknown, info: ModelInfo) => void;
}

export class SwappableModel implements ModelRunner {
  private current: Slot;
  /** Swapped out and not disposed yet: waiting for their batches, or disposing. */
  private readonly retired = new Set<Slot>();
  private closed = false;

  constructor(
    initial: ModelRunner,
    private readonly options: SwappableModelOptions = {},
  ) {
    this.current = { runner: initial, inFlight: 0, retired: false };
  }

  get info(): ModelInfo {
    return this.current.runner.info;
  }

  get concurrency(): number | undefined {
    return this.current.runner.concurrency;
  }

  /** The runner serving new batches now. */
  get runner(): ModelRunner {
    return this.current.runner;
  }

  /** Retired runners whose disposal has not finished (waiting for their batches, or disposing). */
  get retiring(): number {
    return this.retired.size;
  }

  lease(): ModelLease {
    if (this.closed) throw this.disposedError();
    const slot = this.current;
    slot.inFlight++;
    let released = false;
    return {
      model: slot.runner,
      release: () => {
        if (released) return;
        released = true;
        slot.inFlight--;
        if (slot.retired && slot.inFlight === 0) this.disposeSlot(slot);
      },
    };
  }

  async predict(batch: PackedBatch): Promise<BatchOutputs> {
    const lease = this.lease();
    try {
      return await lease.model.predict(batch);
    } finally {
      lease.release();
    }
  }

  /**
   * Serves `next` from now on and returns the runner it replaces, which is disposed as soon as
   * its last running batch (if any) has finished. `next` should be loaded and warm already.
   */
  swap(next: ModelRunner): ModelRunner {
    if (this.closed) throw this.disposedError();
    const old = this.current;
    this.current = { runner: next, inFlight: 0, retired: false };
    old.retired = true;
    this.retired.add(old);
    if (old.inFlight === 0) this.disposeSlot(old);
    return old.runner;
  }

  /** Disposes the current runner and waits for every retired one to be disposed. */
  async dispose(): Promise<void> {
    if (!this.closed) {
      this.closed = true;
      this.current.retired = true;
      this.retired.add(this.current);
    }
    // The worker has drained before it disposes the model; a straggler would be cut off.
    for (const slot of this.retired) this.disposeSlot(slot);
    await Promise.all([...this.retired].map((slot) => slot.disposed));
  }

  private disposeSlot(slot: Slot): void {
    if (slot.disposed) return;
    const info = slot.runner.info;
    const disposed = Promise.resolve()
      .then(() => slot.runner.dispose())
      .catch((err: unknown) => this.options.onDisposeError?.(err, info))
      .finally(() => this.retired.delete(slot));
    slot.disposed = disposed;
  }

  private disposedError(): StreamscoreError {
    return new StreamscoreError('MODEL_FAILED', 'the model has been disposed');
  }
}
