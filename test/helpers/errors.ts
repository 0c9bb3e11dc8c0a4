import { expect } from 'vitest';
import { StreamscoreError } from '../../src/errors.js';

/** The StreamscoreError a promise rejects with (fails the test if it resolves or rejects otherwise). */
export async function rejection(promise: Promise<unknown>): Promise<StreamscoreError> {
  const err = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(StreamscoreError);
  return err as StreamscoreError;
}

/** The StreamscoreError a function throws (fails the test if it returns or throws otherwise). */
export function thrown(fn: () => unknown): StreamscoreError {
  let err: unknown;
  try {
    fn();
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(StreamscoreError);
  return err as StreamscoreError;
}
