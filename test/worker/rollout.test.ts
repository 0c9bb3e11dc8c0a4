import { describe, expect, it } from 'vitest';
import { AvroCodec } from '../../src/codec/avro.js';
import type { InboundRecord } from '../../src/kafka/types.js';
import { Rollout, type RolloutEvent } from '../../src/model/rollout.js';
import { SwappableModel } from '../../src/model/swappable.js';
import type { BatchOutputs, ModelInfo, PackedBatch } from '../../src/model/types.js';
import { InferenceWorker, type WorkerOptions } from '../../src/worker/worker.js';
import { FakeModel, FakeSink, FakeSource } from '../helpers/fakes.js';

const codec = new AvroCodec();

/** Version 8: reverses the doubled scores, so its top-1 label differs wherever scores differ. */
class ReversingModel extends FakeModel {
  override readonly info: ModelInfo = { ...new FakeModel().info, version: '8' };
  override async predict(batch: PackedBatch): Promise<BatchOutputs> {
    const doubled = (await super.predict(batch)).y!;
    const y = new Float32Array(doubled.length);
    for (let i = 0; i < y.length; i += 4)
      for (let j = 0; j < 4; j++) y[i + j] = doubled[i + 3 - j]!;
    return { y };
  }
}

/** Version 8 that agrees with version 7 but fails every request whose first input is odd. */
class FlakyModel extends FakeModel {
  override readonly info: ModelInfo = { ...new FakeModel().info, version: '8' };
  override async predict(batch: PackedBatch): Promise<BatchOutputs> {
    const x = batch.inputs.x!;
    for (let i = 0; i < x.length; i += 4) if (x[i]! % 2 === 1) throw new Error('flaky');
    return super.predict(batch);
  }
}

function record(offset: number): InboundRecord {
  return {
    topic: 'requests',
    partition: 0,
    offset: String(offset),
    key: Buffer.from(`user-${offset}`),
    value: codec.encodeRequest({
      id: `req-${offset}`,
      model: null,
      modelVersion: null,
      requestedAt: null,
      // The top-1 label of the stable version is index 0: x[0] is the largest input.
      inputs: [{ name: 'x', shape: [4], data: Float32Array.from([offset + 10, 3, 2, 1]) }],
    }),
    headers: {},
    timestamp: 1000 + offset,
  };
}

async function until(condition: () => boolean): Promise<void> {
  for (let i = 0; i < 500 && !condition(); i++) await new Promise((r) => setTimeout(r, 5));
  expect(condition()).toBe(true);
}

const options: WorkerOptions = {
  resultTopic: 'results',
  deadLetterTopic: 'dead',
  shadowTopic: 'shadow',
  eventsTopic: 'events',
  maxBatchSize: 16,
  maxDelayMs: 1,
  maxQueued: 10_000,
  maxPayloadBytes: 10_000,
  commitIntervalMs: 0,
  drainTimeoutMs: 5000,
};

/** A started worker serving `model` (default: version 7 of the fake) with `rollout`. */
async function startTrial(rollout: Rollout, model = new SwappableModel(new FakeModel())) {
  const source = new FakeSource();
  const sink = new FakeSink();
  const worker = new InferenceWorker({ source, sink, codec, model, rollout, options });
  await worker.start();
  return { source, sink, worker };
}

describe('InferenceWorker with a candidate on trial', () => {
  it('shadow: the stable version answers every request, the candidate copies go to the shadow topic and are compared', async () => {
    const candidate = new FakeModel(); // same scores as the stable one: full agreement
    (candidate as { info: ModelInfo }).info = { ...candidate.info, version: '8' };
    const rollout = new Rollout({ candidate, fraction: 0, shadow: 0.5 });
    const { source, sink, worker } = await startTrial(rollout);
    const records = Array.from({ length: 300 }, (_, i) => record(i));
    await source.deliver(records);
    await until(() => source.committed('requests', 0) === '300');
    await worker.stop();

    const results = sink.to('results');
    expect(results.map((r) => r.origin?.offset)).toEqual(records.map((r) => r.offset));
    expect(results.every((r) => codec.decodeResult(r.value).modelVersion === '7')).toBe(true);
    const shadowed = records.filter((r, i) => rollout.route(r.key, `req-${i}`) === 'shadow');
    expect(shadowed.length).toBeGreaterThan(100);
    expect(shadowed.length).toBeLessThan(200);
    const shadow = sink.to('shadow');
    expect(shadow.map((r) => r.key?.toString()).sort()).toEqual(
      shadowed.map((r) => r.key!.toString()).sort(),
    );
    expect(shadow.every((r) => codec.decodeResult(r.value).modelVersion === '8')).toBe(true);
    expect(rollout.stats).toMatchObject({ compared: shadowed.length, agreed: shadowed.length });
    expect(worker.metrics.snapshot).toMatchObject({ produced: 300, shadowSent: shadowed.length });
    expect(rollout.state).toBe('trial');
  });

  it('rolls back a candidate that disagrees beyond its threshold: event record, metric, then all stable', async () => {
    const rollout = new Rollout({
      candidate: new ReversingModel(),
      fraction: 0.2,
      shadow: 0.5,
      thresholds: { maxErrorRate: 0.05, minAgreement: 0.9, maxLatencyRatio: null, minRequests: 20 },
      stableVersion: () => '7',
    });
    const events: RolloutEvent[] = [];
    rollout.listen({ rolledBack: (e) => events.push(e) });
    const { source, sink, worker } = await startTrial(rollout);
    const first = Array.from({ length: 200 }, (_, i) => record(i));
    await source.deliver(first);
    await until(() => source.committed('requests', 0) === '200');
    expect(rollout.state).toBe('rolled-back');
    expect(events).toHaveLength(1);
    expect(events[0]).toMatchObject({
      type: 'rollback',
      reason: 'agreement',
      version: '8',
      stableVersion: '7',
      by: 'judge',
    });
    expect(events[0]!.stats.agreement).toBe(0);
    // The event went to the events topic as JSON; the metric counted it.
    const [eventRecord] = sink.to('events');
    expect(JSON.parse(eventRecord!.value.toString())).toMatchObject({
      type: 'rollback',
      reason: 'agreement',
      version: '8',
    });
    expect(worker.metrics.snapshot.rollouts).toEqual([
      { type: 'rollback', reason: 'agreement', version: '8' },
    ]);
    // After the rollback every key, canary keys included, is answered by the stable version.
    const later = Array.from({ length: 100 }, (_, i) => record(200 + i));
    await source.deliver(later);
    await until(() => source.committed('requests', 0) === '300');
    await worker.stop();
    const laterResults = sink.to('results').filter((r) => Number(r.origin!.offset) >= 200);
    expect(laterResults).toHaveLength(100);
    expect(laterResults.every((r) => codec.decodeResult(r.value).modelVersion === '7')).toBe(true);
  });

  it('rolls back a candidate whose error rate crosses its threshold; its canary failures are dead-lettered, its shadow failures are not', async () => {
    const rollout = new Rollout({
      candidate: new FlakyModel(),
      fraction: 0.3,
      shadow: 0.3,
      thresholds: { maxErrorRate: 0.1, minAgreement: null, maxLatencyRatio: null, minRequests: 30 },
    });
    const { source, sink, worker } = await startTrial(rollout);
    const records = Array.from({ length: 400 }, (_, i) => record(i));
    await source.deliver(records);
    await until(() => source.committed('requests', 0) === '400');
    await worker.stop();
    expect(rollout.state).toBe('rolled-back');
    expect(rollout.event).toMatchObject({ reason: 'error-rate' });
    // Every request answered once; only canary-routed records can be dead letters.
    expect(sink.sent.filter((r) => r.topic !== 'shadow' && r.topic !== 'events')).toHaveLength(400);
    for (const dead of sink.to('dead')) {
      const offset = Number(dead.origin!.offset);
      expect(offset % 2).toBe(1);
    }
    expect(sink.to('dead').length).toBeGreaterThan(0);
  });

  it('promotes by hand: the candidate then answers every key, and a second end of the trial is refused', async () => {
    const model = new SwappableModel(new FakeModel());
    const candidate = new ReversingModel();
    const rollout = new Rollout({
      candidate,
      fraction: 0.1,
      stableVersion: () => model.info.version,
    });
    rollout.listen({ promoted: () => model.swap(candidate) });
    const { source, sink, worker } = await startTrial(rollout, model);
    await source.deliver(Array.from({ length: 50 }, (_, i) => record(i)));
    await until(() => source.committed('requests', 0) === '50');
    const event = rollout.promote('cli');
    expect(event).toMatchObject({
      type: 'promotion',
      reason: 'manual',
      by: 'cli',
      version: '8',
      stableVersion: '7',
    });
    expect(() => rollout.rollback('manual', 'cli')).toThrow(/already promoted/);
    await source.deliver(Array.from({ length: 50 }, (_, i) => record(50 + i)));
    await until(() => source.committed('requests', 0) === '100');
    await worker.stop();
    const after = sink.to('results').filter((r) => Number(r.origin!.offset) >= 50);
    expect(after.every((r) => codec.decodeResult(r.value).modelVersion === '8')).toBe(true);
    expect(JSON.parse(sink.to('events')[0]!.value.toString())).toMatchObject({ type: 'promotion' });
  });
});
