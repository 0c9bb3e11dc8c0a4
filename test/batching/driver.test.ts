import { describe, expect, it } from 'vitest';
import { BatchDriver } from '../../src/batching/driver.js';
import { BatchPolicy } from '../../src/batching/policy.js';
import { ManualClock } from '../helpers/manual-clock.js';

const tick = () => new Promise((resolve) => setImmediate(resolve));

function setup(maxBatchSize: number, maxDelayMs: number) {
  const clock = new ManualClock();
  const batches: number[][] = [];
  let release: (() => void) | null = null;
  let hold = false;
  const driver = new BatchDriver<number>({
    policy: new BatchPolicy({ maxBatchSize, maxDelayMs }),
    clock,
    run: async (batch) => {
      batches.push(batch);
      if (hold) await new Promise<void>((resolve) => (release = resolve));
    },
  });
  return {
    clock,
    batches,
    driver,
    holdRuns: () => (hold = true),
    finishRun: () => {
      hold = false;
      release?.();
    },
  };
}

describe('BatchDriver', () => {
  it('runs a full batch at once and a partial one when the oldest item hits maxDelayMs', async () => {
    const { clock, batches, driver } = setup(3, 10);
    [1, 2, 3, 4].forEach((n) => driver.add(n));
    expect(batches).toEqual([[1, 2, 3]]);
    clock.advance(9);
    expect(batches).toHaveLength(1);
    await tick();
    clock.advance(1);
    expect(batches).toEqual([[1, 2, 3], [4]]);
  });

  it('keeps filling the next batch while one runs, then runs it when the slot frees', async () => {
    const { clock, batches, driver, holdRuns, finishRun } = setup(4, 5);
    holdRuns();
    driver.add(1);
    clock.advance(5);
    expect(batches).toEqual([[1]]);
    [2, 3, 4].forEach((n) => driver.add(n));
    clock.advance(100); // overdue, but the only slot is busy
    expect(batches).toHaveLength(1);
    finishRun();
    await tick();
    expect(batches).toEqual([[1], [2, 3, 4]]);
  });

  it('close() flushes what waits without waiting for the delay, and resolves when done', async () => {
    const { batches, driver } = setup(10, 60_000);
    [1, 2].forEach((n) => driver.add(n));
    expect(batches).toHaveLength(0);
    await driver.close();
    expect(batches).toEqual([[1, 2]]);
  });

  it('reports a failing run to onError and keeps going', async () => {
    const clock = new ManualClock();
    const errors: unknown[] = [];
    const seen: number[][] = [];
    const driver = new BatchDriver<number>({
      policy: new BatchPolicy({ maxBatchSize: 1, maxDelayMs: 0 }),
      clock,
      run: async (batch) => {
        seen.push(batch);
        if (batch[0] === 1) throw new Error('boom');
      },
      onError: (err) => errors.push(err),
    });
    driver.add(1);
    driver.add(2);
    await driver.idle();
    expect(seen).toEqual([[1], [2]]);
    expect(errors).toHaveLength(1);
  });
});

describe('BatchDriver timers', () => {
  it('sets one timer for a forming batch, not one per item', () => {
    const clock = new ManualClock();
    let timersSet = 0;
    const counting = {
      now: () => clock.now(),
      setTimer: (ms: number, fn: () => void) => (timersSet++, clock.setTimer(ms, fn)),
    };
    const batches: number[][] = [];
    const driver = new BatchDriver<number>({
      policy: new BatchPolicy({ maxBatchSize: 100, maxDelayMs: 10 }),
      clock: counting,
      run: async (batch) => void batches.push(batch),
    });
    for (let i = 0; i < 50; i++) driver.add(i);
    expect(timersSet).toBe(1);
    clock.advance(10);
    expect(batches).toEqual([Array.from({ length: 50 }, (_, i) => i)]);
    expect(clock.pendingTimers).toBe(0);
  });
});
