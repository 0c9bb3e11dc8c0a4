/**
 * Narrowing a failing batch down to the records that fail.
 *
 * One predict per batch is the happy path and costs nothing extra here. When it throws, the
 * batch is split in halves and each half predicted again, recursively, until every record either
 * has outputs (from the smallest sub-batch that succeeded) or has failed on its own:
 *
 * - a non-retriable failure of a single record fails it at once;
 * - a retriable failure (`StreamscoreError.retriable`, or `REPLICA_CRASHED`: the pool already
 *   restarted replicas for it) of a single record is tried again, up to `maxAttempts` predicts of
 *   that record alone in total, then fails it.
 *
 * Failures of a batch larger than one are not counted against its records: they only say that
 * some record in it, or the moment, was bad. A failed record reports every failure it had alone,
 * oldest first, as its history. Halves run one after the other, left first; outcomes come back
 * in the items' order.
 */
import { asStreamscoreError, type StreamscoreError } from '../errors.js';
import type { BatchOutputs, ModelRunner, PackedBatch } from '../model/types.js';

export const DEFAULT_MAX_ATTEMPTS = 5;

export interface NarrowOptions {
  /** Predicts of one record alone before a retriable failure is final. Default 5, at least 1. */
  maxAttempts?: number | undefined;
  /** Called for every failed predict (e.g. to log or count), before the next step. */
  onFailure?: ((error: StreamscoreError, size: number) => void) | undefined;
}

/** A record that was scored: row `index` of `outputs`, a sub-batch of `size` records. */
export interface Scored {
  ok: true;
  outputs: BatchOutputs;
  index: number;
  size: number;
}

/** A record whose scoring failed for good. */
export interface Failed {
  ok: false;
  /** The final error. */
  error: StreamscoreError;
  /** Every failure of this record alone, oldest first (the last is `error`). */
  history: StreamscoreError[];
}

export type Outcome = Scored | Failed;

/**
 * Either the whole batch succeeded in one predict (`outputs`, rows in item order), or the batch
 * was narrowed and each item has its own outcome.
 */
export type NarrowResult =
  | { outputs: BatchOutputs; outcomes?: undefined }
  | { outputs?: undefined; outcomes: Outcome[] };

export function isRetriable(error: StreamscoreError): boolean {
  return error.retriable || error.code === 'REPLICA_CRASHED';
}

/** Predicts `items` (packed by `pack`), narrowing a failing batch to the records that fail. */
export async function predictNarrowing<T>(
  model: Pick<ModelRunner, 'predict'>,
  items: readonly T[],
  pack: (items: readonly T[]) => PackedBatch,
  options: NarrowOptions = {},
): Promise<NarrowResult> {
  let first: StreamscoreError;
  try {
    return { outputs: await model.predict(pack(items)) };
  } catch (err) {
    first = asStreamscoreError(err, 'MODEL_FAILED');
  }
  const maxAttempts = Math.max(1, options.maxAttempts ?? DEFAULT_MAX_ATTEMPTS);
  options.onFailure?.(first, items.length);
  const outcomes: Outcome[] = new Array<Outcome>(items.length);

  const predictAlone = async (index: number, firstError: StreamscoreError): Promise<void> => {
    const history = [firstError];
    let error = firstError;
    while (isRetriable(error) && history.length < maxAttempts) {
      try {
        const outputs = await model.predict(pack(items.slice(index, index + 1)));
        outcomes[index] = { ok: true, outputs, index: 0, size: 1 };
        return;
      } catch (err) {
        error = asStreamscoreError(err, 'MODEL_FAILED');
        history.push(error);
        options.onFailure?.(error, 1);
      }
    }
    outcomes[index] = { ok: false, error, history };
  };

  /** Items [from, to) failed together with `error`: narrow them down. */
  const narrow = async (from: number, to: number, error: StreamscoreError): Promise<void> => {
    if (to - from === 1) return predictAlone(from, error);
    const middle = from + Math.ceil((to - from) / 2);
    for (const [start, end] of [
      [from, middle],
      [middle, to],
    ] as const) {
      const part = items.slice(start, end);
      try {
        const outputs = await model.predict(pack(part));
        for (let i = start; i < end; i++) {
          outcomes[i] = { ok: true, outputs, index: i - start, size: end - start };
        }
      } catch (err) {
        const failure = asStreamscoreError(err, 'MODEL_FAILED');
        options.onFailure?.(failure, part.length);
        await narrow(start, end, failure);
      }
    }
  };

  await narrow(0, items.length, first);
  return { outcomes };
}
