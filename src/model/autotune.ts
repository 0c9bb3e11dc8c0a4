/**
 * Batch-size autotune: measure the model at a few batch sizes and pick the one with the highest
 * throughput whose median batch time fits a latency budget. Bigger batches amortise the fixed
 * cost of a predict (tensor set-up, kernel dispatch, for a pool the thread round trip) until the
 * per-example work dominates; past that point they only add latency.
 *
 * A pure measurement helper: it reads no configuration and changes nothing; the caller decides
 * what to do with `chosen` (typically cap the batcher's maxBatchSize with it, at start).
 */
import type { ModelRunner, PackedBatch } from './types.js';

export interface AutotuneOptions {
  /** Batch sizes to try. Default: powers of two from 1 up to `maxBatchSize`, and that size. */
  candidates?: readonly number[];
  /** Largest batch size allowed; candidates above it are an error. */
  maxBatchSize: number;
  /** The median time of one batch (predict call to result) must not exceed this. */
  latencyBudgetMs: number;
  /** Batches kept in flight while measuring: the runner's replicas. Default 1. */
  concurrency?: number;
  /** Measuring time per candidate, after one warm-up batch per lane. Default 150 ms. */
  minDurationMs?: number;
  /** Measured batches per candidate at least, however long they take. Default 5. */
  minBatches?: number;
  /** Source of the random inputs, in [0, 1). Default Math.random. */
  random?: () => number;
}

export interface AutotuneRow {
  batchSize: number;
  /** Examples predicted per second over the measuring time, all lanes together. */
  samplesPerSec: number;
  /** Median (p50) time of one batch, ms. */
  batchMs: number;
  /** Batches measured. */
  batches: number;
}

export interface AutotuneResult {
  chosen: number;
  /** One row per candidate, smallest batch first. */
  table: AutotuneRow[];
}

const DEFAULT_MIN_DURATION_MS = 150;
const DEFAULT_MIN_BATCHES = 5;

function positiveInteger(name: string, value: number): void {
  if (!Number.isSafeInteger(value) || value < 1) {
    throw new RangeError(`${name} must be a positive integer, got ${value}`);
  }
}

/** 1, 2, 4, … up to `max`, and `max` itself when it is not a power of two. */
export function powersOfTwoUpTo(max: number): number[] {
  const sizes: number[] = [];
  for (let size = 1; size <= max; size *= 2) sizes.push(size);
  if (sizes.at(-1) !== max) sizes.push(max);
  return sizes;
}

function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

/**
 * A batch of `size` random examples, on shared memory: a replica pool then shares it with its
 * threads instead of copying it per predict, as it does with the batches the worker packs.
 * A free (`null`) dimension is measured at 1.
 */
function randomBatch(
  runner: Pick<ModelRunner, 'info'>,
  size: number,
  random: () => number,
): PackedBatch {
  const inputs: Record<string, Float32Array> = {};
  for (const spec of runner.info.inputs) {
    const perExample = spec.shape.reduce<number>((n, d) => n * (d ?? 1), 1);
    const values = new Float32Array(new SharedArrayBuffer(size * perExample * 4));
    for (let i = 0; i < values.length; i++) values[i] = random();
    inputs[spec.name] = values;
  }
  return { size, inputs };
}

async function measure(
  runner: Pick<ModelRunner, 'predict' | 'info'>,
  size: number,
  options: { concurrency: number; minDurationMs: number; minBatches: number; random: () => number },
): Promise<AutotuneRow> {
  const batch = randomBatch(runner, size, options.random);
  const lanes = Array.from({ length: options.concurrency });
  // One unmeasured batch per lane: first use of a shape sets up kernels and buffers.
  await Promise.all(lanes.map(() => runner.predict(batch)));

  const durations: number[] = [];
  let launched = 0;
  const started = performance.now();
  const lane = async () => {
    while (launched < options.minBatches || performance.now() - started < options.minDurationMs) {
      launched += 1;
      const t0 = performance.now();
      await runner.predict(batch);
      durations.push(performance.now() - t0);
    }
  };
  await Promise.all(lanes.map(lane));
  const elapsedMs = performance.now() - started;
  return {
    batchSize: size,
    samplesPerSec: (durations.length * size * 1000) / elapsedMs,
    batchMs: median(durations),
    batches: durations.length,
  };
}

/**
 * Measure every candidate batch size (smallest first, one after another) and choose the one with
 * the highest samples/s whose p50 batch time is within `latencyBudgetMs`; when none is, the
 * smallest candidate. Takes about `minDurationMs` per candidate, or longer for slow batches.
 */
export async function autotuneBatchSize(
  runner: Pick<ModelRunner, 'predict' | 'info'>,
  options: AutotuneOptions,
): Promise<AutotuneResult> {
  const { maxBatchSize, latencyBudgetMs } = options;
  positiveInteger('maxBatchSize', maxBatchSize);
  if (!(latencyBudgetMs > 0)) {
    throw new RangeError(`latencyBudgetMs must be positive, got ${latencyBudgetMs}`);
  }
  const concurrency = options.concurrency ?? 1;
  positiveInteger('concurrency', concurrency);
  const minBatches = options.minBatches ?? DEFAULT_MIN_BATCHES;
  positiveInteger('minBatches', minBatches);
  const minDurationMs = options.minDurationMs ?? DEFAULT_MIN_DURATION_MS;
  if (!(minDurationMs >= 0)) {
    throw new RangeError(`minDurationMs must be zero or more, got ${minDurationMs}`);
  }
  const candidates = [...new Set(options.candidates ?? powersOfTwoUpTo(maxBatchSize))].sort(
    (a, b) => a - b,
  );
  if (candidates.length === 0) throw new RangeError('candidates must not be empty');
  for (const size of candidates) {
    positiveInteger('candidate batch size', size);
    if (size > maxBatchSize) {
      throw new RangeError(`candidate batch size ${size} exceeds maxBatchSize ${maxBatchSize}`);
    }
  }

  const random = options.random ?? Math.random;
  const table: AutotuneRow[] = [];
  for (const size of candidates) {
    table.push(await measure(runner, size, { concurrency, minDurationMs, minBatches, random }));
  }
  let best: AutotuneRow | undefined;
  for (const row of table) {
    if (
      row.batchMs <= latencyBudgetMs &&
      (best === undefined || row.samplesPerSec > best.samplesPerSec)
    ) {
      best = row;
    }
  }
  return { chosen: best?.batchSize ?? candidates[0]!, table };
}
