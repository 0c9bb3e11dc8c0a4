import { describe, expect, it } from 'vitest';
import { BatchPolicy } from '../../src/batching/policy.js';

describe('BatchPolicy', () => {
  it('is due immediately once maxBatchSize items wait', () => {
    const policy = new BatchPolicy<number>({ maxBatchSize: 3, maxDelayMs: 100 });
    policy.add(1, 0);
    policy.add(2, 0);
    expect(policy.untilNext(0)).toBe(100);
    policy.add(3, 0);
    expect(policy.untilNext(0)).toBe(0);
    expect(policy.flush()).toEqual([1, 2, 3]);
    expect(policy.untilNext(0)).toBeNull();
  });

  it('measures the delay from the oldest waiting item, not the newest', () => {
    const policy = new BatchPolicy<string>({ maxBatchSize: 10, maxDelayMs: 50 });
    policy.add('old', 1000);
    policy.add('new', 1040);
    expect(policy.untilNext(1040)).toBe(10);
    expect(policy.untilNext(1050)).toBe(0);
    expect(policy.untilNext(2000)).toBe(0);
  });

  it('flushes at most maxBatchSize, oldest first, and keeps the arrival time of the rest', () => {
    const policy = new BatchPolicy<number>({ maxBatchSize: 2, maxDelayMs: 30 });
    policy.add(1, 0);
    policy.add(2, 5);
    policy.add(3, 10);
    expect(policy.flush()).toEqual([1, 2]);
    expect(policy.size).toBe(1);
    expect(policy.untilNext(20)).toBe(20); // 3 arrived at 10: due at 40
  });

  it('cuts by bytes when maxBatchBytes is set, but never returns an empty batch', () => {
    const policy = new BatchPolicy<string>({
      maxBatchSize: 100,
      maxDelayMs: 1000,
      maxBatchBytes: 100,
    });
    policy.add('a', 0, 60);
    expect(policy.untilNext(0)).toBe(1000);
    policy.add('b', 0, 60);
    expect(policy.untilNext(0)).toBe(0);
    expect(policy.flush()).toEqual(['a']);
    expect(policy.bytes).toBe(60);
    const huge = new BatchPolicy<string>({ maxBatchSize: 100, maxDelayMs: 0, maxBatchBytes: 10 });
    huge.add('big', 0, 500);
    expect(huge.flush()).toEqual(['big']);
  });

  it('with maxDelayMs 0 every item is due at once', () => {
    const policy = new BatchPolicy<number>({ maxBatchSize: 8, maxDelayMs: 0 });
    policy.add(1, 5);
    expect(policy.untilNext(5)).toBe(0);
  });

  it('rejects impossible settings', () => {
    expect(() => new BatchPolicy({ maxBatchSize: 0, maxDelayMs: 1 })).toThrow(RangeError);
    expect(() => new BatchPolicy({ maxBatchSize: 1, maxDelayMs: -1 })).toThrow(RangeError);
  });
});
