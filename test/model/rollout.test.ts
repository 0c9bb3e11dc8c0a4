import { describe, expect, it } from 'vitest';
import { Rollout, type RollbackThresholds } from '../../src/model/rollout.js';
import { FakeModel } from '../helpers/fakes.js';

const thresholds = (t: Partial<RollbackThresholds>): RollbackThresholds => ({
  maxErrorRate: 0.05,
  minAgreement: null,
  maxLatencyRatio: null,
  minRequests: 100,
  ...t,
});

describe('Rollout', () => {
  it('routes the canary share, then the shadow share of the rest, by key; all stable once over', () => {
    const rollout = new Rollout({ candidate: new FakeModel(), fraction: 0.1, shadow: 0.5 });
    const counts = { stable: 0, canary: 0, shadow: 0 };
    for (let i = 0; i < 100_000; i++) counts[rollout.route(Buffer.from(`k${i}`), '')]++;
    expect(counts.canary / 1e5).toBeCloseTo(0.1, 1);
    expect(counts.shadow / 1e5).toBeCloseTo(0.45, 1);
    expect(rollout.route(Buffer.from('k1'), '')).toBe(rollout.route(Buffer.from('k1'), ''));
    rollout.rollback('manual', 'test');
    expect(rollout.route(Buffer.from('k1'), '')).toBe('stable');
  });

  it('compares latency only on calls of the same size class', () => {
    const rollout = new Rollout({
      candidate: new FakeModel(),
      fraction: 0.1,
      thresholds: thresholds({ maxLatencyRatio: 1.5 }),
    });
    // Stable: full calls of 128 at 0.1 ms per request. Candidate: small calls of 12 at 0.5 ms per
    // request — no stable call of that class yet, so nothing to judge.
    for (let i = 0; i < 20; i++) {
      rollout.stableScored(128, 12.8);
      rollout.candidateScored(12, 0, 6);
    }
    expect(rollout.view().latencyRatio).toBeNull();
    expect(rollout.judge()).toBeNull();
    // Stable calls of 8..15 at 0.4 ms per request: the candidate is 1.25× slower, within 1.5×.
    for (let i = 0; i < 10; i++) rollout.stableScored(10, 4);
    expect(rollout.view().latencyRatio).toBeCloseTo(1.25, 5);
    expect(rollout.judge()).toBeNull();
    // Far slower in that class now (1.1 ms per request; 2.6× overall): rolled back for latency.
    for (let i = 0; i < 200; i++) rollout.candidateScored(12, 0, 12 * 1.1);
    const event = rollout.judge();
    expect(event).toMatchObject({ type: 'rollback', reason: 'latency' });
    expect(rollout.state).toBe('rolled-back');
  });

  it('judges nothing before minRequests, then the error rate; promoteAfter promotes a healthy one', () => {
    const failing = new Rollout({
      candidate: new FakeModel(),
      fraction: 0.1,
      thresholds: thresholds({ maxErrorRate: 0.1, minRequests: 100 }),
    });
    failing.candidateScored(50, 25, 5);
    expect(failing.judge()).toBeNull(); // 50 % failed, but only 50 requests
    failing.candidateScored(50, 0, 5);
    expect(failing.judge()).toMatchObject({
      reason: 'error-rate',
      detail: 'error rate 25.0 % > 10.0 %',
    });

    const healthy = new Rollout({
      candidate: new FakeModel(),
      fraction: 0.1,
      thresholds: thresholds({ minRequests: 100 }),
      promoteAfter: 300,
      stableVersion: () => '1',
    });
    const promoted: string[] = [];
    healthy.listen({ promoted: (e) => promoted.push(`${e.stableVersion}→${e.version}`) });
    for (let i = 0; i < 29; i++) healthy.candidateScored(10, 0, 1);
    expect(healthy.judge()).toBeNull();
    healthy.candidateScored(10, 0, 1);
    expect(healthy.judge()).toMatchObject({
      type: 'promotion',
      reason: 'promote-after',
      by: 'judge',
    });
    expect(promoted).toEqual(['1→7']);
    expect(() => healthy.promote('cli')).toThrow(/already promoted/);
  });
});
