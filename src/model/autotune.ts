/**
 * Batch-size autotune: measure the model at a few batch sizes and pick the largest one whose
 * median batch time fits a latency budget and whose throughput is near the best measured (within
 * `tolerance`). Bigger batches amortise the fixed cost of a predict (tensor set-up, kernel
 * dispatch, for a pool the thread round trip) until the per-example work dominates; past that
 * point the model's throughput is flat.
 *
 * Why the largest near-best size and not the fastest: the chosen size caps the batcher, which
 * fills a batch only while requests wait (batching.maxDelayMs closes it otherwise), so a larger
 * cap costs nothing at light load. Under a backlog it is what lets the worker catch up: its own
 * per-batch costs (packing, the produce request, the commit) are not in this measurement and
 * shrink per request with the batch. On a flat curve the fastest size is a matter of noise: the
 * bench's MLP worker once chose 16 of 1…128 (model throughput within 8 % of each other from 16
 * up) and fell behind at half the load it carried at 128.
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
  /**
   * A size counts as near-best when its examples/s are at least (1 − tolerance) × the best
   * within the budget; the largest near-best size is chosen. Default 0.1.
   */
  tolerance?: number;
  /** Source of the random inputs, in [0, 1). Default Math.random. */
  random?: () => number;
  /** Milliseconds, for timing batches. Default performance.now. */
  now?: () => number;
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
const DEFAULT_TOLERANCE = 0.1;

function checkTolerance(tolerance: number): void {
  if (!(tolerance >= 0 && tolerance < 1)) {
    throw new RangeError(`tolerance must be at least 0 and below 1, got ${tolerance}`);
  }
}

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
  options: {
    concurrency: number;
    minDurationMs: number;
    minBatches: number;
    random: () => number;
    now: () => number;
  },
): Promise<AutotuneRow> {
  const { now } = options;
  const batch = randomBatch(runner, size, options.random);
  const lanes = Array.from({ length: options.concurrency });
  // One unmeasured batch per lane: first use of a shape sets up kernels and buffers.
  await Promise.all(lanes.map(() => runner.predict(batch)));

  const durations: number[] = [];
  let launched = 0;
  const started = now();
  const lane = async () => {
    while (launched < options.minBatches || now() - started < options.minDurationMs) {
      launched += 1;
      const t0 = now();
      await runner.predict(batch);
      durations.push(now() - t0);
    }
  };
  await Promise.all(lanes.map(lane));
  const elapsedMs = now() - started;
  return {
    batchSize: size,
    samplesPerSec: (durations.length * size * 1000) / elapsedMs,
    batchMs: median(durations),
    batches: durations.length,
  };
}

/**
 * The choice from a measured table: among the rows whose p50 batch time is within
 * `latencyBudgetMs`, the largest batch size whose samples/s are at least (1 − tolerance) × the
 * best of them; when no row is within the budget, the smallest batch size.
 */
export function chooseFromTable(
  table: readonly AutotuneRow[],
  latencyBudgetMs: number,
  tolerance = DEFAULT_TOLERANCE,
): number {
  if (table.length === 0) throw new RangeError('the table must not be empty');
  checkTolerance(tolerance);
  const within = table.filter((row) => row.batchMs <= latencyBudgetMs);
  if (within.length === 0) return Math.min(...table.map((row) => row.batchSize));
  const best = Math.max(...within.map((row) => row.samplesPerSec));
  const nearBest = within.filter((row) => row.samplesPerSec >= (1 - tolerance) * best);
  return Math.max(...nearBest.map((row) => row.batchSize));
}

/**
 * Measure every candidate batch size (smallest first, one after another) and choose by
 * chooseFromTable. Takes about `minDurationMs` per candidate, or longer for slow batches.
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

  const tolerance = options.tolerance ?? DEFAULT_TOLERANCE;
  checkTolerance(tolerance);
  const random = options.random ?? Math.random;
  const now = options.now ?? (() => performance.now());
  const table: AutotuneRow[] = [];
  for (const size of candidates) {
    table.push(
      await measure(runner, size, { concurrency, minDurationMs, minBatches, random, now }),
    );
  }
  return { chosen: chooseFromTable(table, latencyBudgetMs, tolerance), table };
}
