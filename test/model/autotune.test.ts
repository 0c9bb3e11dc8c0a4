import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { autotuneBatchSize, powersOfTwoUpTo } from '../../src/model/autotune.js';
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
