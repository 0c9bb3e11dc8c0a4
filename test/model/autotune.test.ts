import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  autotuneBatchSize,
  chooseFromTable,
  powersOfTwoUpTo,
  type AutotuneRow,
} from '../../src/model/autotune.js';
import type { TfjsModelRunner } from '../../src/model/tfjs-runner.js';
import type { BatchOutputs, ModelInfo, PackedBatch } from '../../src/model/types.js';
import { loadDigitsRunner } from './helpers.js';

const INFO: ModelInfo = {
  name: 'fake',
  version: '1',
  inputs: [{ name: 'x', dtype: 'float32', shape: [3] }],
  outputs: [{ name: 'y', dtype: 'float32', shape: [1] }],
  backend: 'fake',
};

/** A runner whose batch takes `fixedMs + perExampleMs · size`, sleeping; it checks its inputs. */
function sleepingRunner(fixedMs: number, perExampleMs: number) {
  const seen = { sizes: new Set<number>(), maxInFlight: 0 };
  let inFlight = 0;
  return {
    seen,
    info: INFO,
    async predict(batch: PackedBatch): Promise<BatchOutputs> {
      expect(batch.inputs.x).toHaveLength(batch.size * 3);
      seen.sizes.add(batch.size);
      inFlight += 1;
      seen.maxInFlight = Math.max(seen.maxInFlight, inFlight);
      await sleep(fixedMs + perExampleMs * batch.size);
      inFlight -= 1;
      return { y: new Float32Array(batch.size) };
    },
  };
}

/**
 * A runner whose batch of each size takes a fixed time on a clock of its own (`now`), so that
 * throughputs are exact and the choice does not depend on this machine's timers.
 */
function clockedRunner(msBySize: Record<number, number>) {
  let clock = 0;
  return {
    now: () => clock,
    info: INFO,
    async predict(batch: PackedBatch): Promise<BatchOutputs> {
      const ms = msBySize[batch.size];
      if (ms === undefined) throw new Error(`no time for batch size ${batch.size}`);
      await Promise.resolve();
      clock += ms;
      return { y: new Float32Array(batch.size) };
    },
  };
}

const row = (batchSize: number, samplesPerSec: number, batchMs: number): AutotuneRow => ({
  batchSize,
  samplesPerSec,
  batchMs,
  batches: 5,
});

describe('chooseFromTable', () => {
  it('takes the largest size within 10 % of the best throughput and within the budget', () => {
    // A flat curve past 16, as the MLP's: 16 is the fastest by 1 %, 128 the largest near it.
    const table = [
      row(1, 7_000, 0.14),
      row(8, 18_000, 0.44),
      row(16, 20_000, 0.8),
      row(32, 19_800, 1.6),
      row(64, 19_000, 3.4),
      row(128, 18_500, 6.9),
      row(256, 20_000, 12.8),
    ];
    expect(chooseFromTable(table, 10)).toBe(128);
    expect(chooseFromTable(table, 20)).toBe(256);
    // Tolerance 0: the fastest (the old rule), here 16.
    expect(chooseFromTable(table, 10, 0)).toBe(16);
  });

  it('does not take a larger size that is clearly slower', () => {
    const table = [row(16, 10_000, 1.6), row(32, 8_500, 3.8), row(64, 9_500, 6.7)];
    expect(chooseFromTable(table, 50)).toBe(64);
    expect(chooseFromTable(table, 5)).toBe(16);
    expect(chooseFromTable([row(16, 10_000, 1.6), row(32, 8_900, 3.6)], 50)).toBe(16);
  });

  it('falls back to the smallest size when none fits the budget', () => {
    expect(chooseFromTable([row(8, 100, 80), row(4, 90, 44)], 10)).toBe(4);
    expect(() => chooseFromTable([], 10)).toThrow(/empty/);
    expect(() => chooseFromTable([row(8, 100, 1)], 10, -0.1)).toThrow(/tolerance/);
    expect(() => chooseFromTable([row(8, 100, 1)], 10, Number.NaN)).toThrow(/tolerance/);
  });
});

describe('autotuneBatchSize with a runner of known cost', () => {
  it('picks the largest batch whose batch time fits the budget', async () => {
    // 4 ms + 0.5 ms per example: 1 → 4.5, 16 → 12, 32 → 20, 64 → 36 ms per batch.
    const runner = sleepingRunner(4, 0.5);
    const { chosen, table } = await autotuneBatchSize(runner, {
      maxBatchSize: 64,
      latencyBudgetMs: 30,
      minDurationMs: 30,
    });
    expect(table.map((r) => r.batchSize)).toEqual([1, 2, 4, 8, 16, 32, 64]);
    expect(chosen).toBe(32);
    const row64 = table.find((r) => r.batchSize === 64)!;
    expect(row64.batchMs).toBeGreaterThan(30);
    for (const row of table) {
      expect(row.batches).toBeGreaterThanOrEqual(5);
      expect(row.samplesPerSec).toBeGreaterThan(0);
    }
    expect(runner.seen.maxInFlight).toBe(1);
  });

  it('measures each size and keeps the largest near the best, on exact batch times', async () => {
    // Examples/s: 16 → 4,000 (the best), 32 → 3,810 (95 %), 64 → 3,556 (89 %); 128 is over budget.
    const runner = clockedRunner({ 1: 1, 2: 1.5, 4: 2, 8: 3, 16: 4, 32: 8.4, 64: 18, 128: 40 });
    const options = { maxBatchSize: 128, latencyBudgetMs: 30, minDurationMs: 0, now: runner.now };
    const { chosen, table } = await autotuneBatchSize(runner, options);
    expect(
      table.map((r) => [r.batchSize, Math.round(r.samplesPerSec), Number(r.batchMs.toFixed(3))]),
    ).toEqual([
      [1, 1000, 1],
      [2, 1333, 1.5],
      [4, 2000, 2],
      [8, 2667, 3],
      [16, 4000, 4],
      [32, 3810, 8.4],
      [64, 3556, 18],
      [128, 3200, 40],
    ]);
    expect(chosen).toBe(32);
    expect((await autotuneBatchSize(runner, { ...options, tolerance: 0 })).chosen).toBe(16);
    expect((await autotuneBatchSize(runner, { ...options, tolerance: 0.15 })).chosen).toBe(64);
    await expect(autotuneBatchSize(runner, { ...options, tolerance: 1 })).rejects.toThrow(
      /tolerance/,
    );
  });

  it('falls back to the smallest candidate when no batch fits the budget', async () => {
    const runner = sleepingRunner(4, 0.5);
    const { chosen, table } = await autotuneBatchSize(runner, {
      maxBatchSize: 8,
      candidates: [8, 2, 4, 2],
      latencyBudgetMs: 1,
      minDurationMs: 10,
      minBatches: 2,
    });
    expect(table.map((r) => r.batchSize)).toEqual([2, 4, 8]);
    expect(chosen).toBe(2);
  });

  it('keeps `concurrency` batches in flight', async () => {
    const runner = sleepingRunner(2, 0);
    await autotuneBatchSize(runner, {
      maxBatchSize: 4,
      candidates: [4],
      latencyBudgetMs: 100,
      concurrency: 3,
      minDurationMs: 10,
    });
    expect(runner.seen.maxInFlight).toBe(3);
  });

  it('rejects candidates above maxBatchSize and nonsense options', async () => {
    const runner = sleepingRunner(0, 0);
    await expect(
      autotuneBatchSize(runner, { maxBatchSize: 8, candidates: [4, 16], latencyBudgetMs: 10 }),
    ).rejects.toThrow(RangeError);
    await expect(
      autotuneBatchSize(runner, { maxBatchSize: 0, latencyBudgetMs: 10 }),
    ).rejects.toThrow(/maxBatchSize/);
    await expect(
      autotuneBatchSize(runner, { maxBatchSize: 8, candidates: [], latencyBudgetMs: 10 }),
    ).rejects.toThrow(/empty/);
    expect(runner.seen.sizes.size).toBe(0);
  });

  it('defaults to powers of two up to maxBatchSize, and that size', () => {
    expect(powersOfTwoUpTo(32)).toEqual([1, 2, 4, 8, 16, 32]);
    expect(powersOfTwoUpTo(48)).toEqual([1, 2, 4, 8, 16, 32, 48]);
    expect(powersOfTwoUpTo(1)).toEqual([1]);
  });
});

describe('autotuneBatchSize with the digits model', () => {
  let runner: TfjsModelRunner;
  beforeAll(async () => {
    runner = await loadDigitsRunner();
  });
  afterAll(async () => {
    await runner.dispose();
  });

  it('measures every candidate and chooses one of them', async () => {
    const { chosen, table } = await autotuneBatchSize(runner, {
      maxBatchSize: 32,
      latencyBudgetMs: 50,
      minDurationMs: 40,
    });
    expect(table.map((r) => r.batchSize)).toEqual([1, 2, 4, 8, 16, 32]);
    for (const row of table) {
      expect(row).toEqual({
        batchSize: expect.any(Number),
        samplesPerSec: expect.any(Number),
        batchMs: expect.any(Number),
        batches: expect.any(Number),
      });
      expect(row.samplesPerSec).toBeGreaterThan(0);
      expect(row.batchMs).toBeGreaterThan(0);
    }
    expect(table.map((r) => r.batchSize)).toContain(chosen);
    // A predict's fixed cost dwarfs 31 extra rows of a 4.8k-parameter model.
    expect(table.at(-1)!.samplesPerSec).toBeGreaterThan(table[0]!.samplesPerSec);
  });
});
