import { describe, expect, it } from 'vitest';
import { AvroCodec } from '../../src/codec/avro.js';
import type { InboundRecord } from '../../src/kafka/types.js';
import { Rollout } from '../../src/model/rollout.js';
import { SwappableModel } from '../../src/model/swappable.js';
import type { BatchOutputs, ModelInfo, PackedBatch } from '../../src/model/types.js';
import { HEADER } from '../../src/worker/headers.js';
import { InferenceWorker } from '../../src/worker/worker.js';
import { FakeModel, FakeSink, FakeSource } from '../helpers/fakes.js';

const codec = new AvroCodec();

/** Version 8 of the fake model: y = 3x (version 7 doubles), so each result shows who scored it. */
class TriplerModel extends FakeModel {
  override readonly info: ModelInfo = { ...new FakeModel().info, version: '8' };
  override async predict(batch: PackedBatch): Promise<BatchOutputs> {
    const doubled = await super.predict(batch);
    return { y: doubled.y!.map((v) => (v / 2) * 3) };
  }
}

function record(offset: number, key: string | null, first: number): InboundRecord {
  return {
    topic: 'requests',
    partition: 0,
    offset: String(offset),
    key: key === null ? null : Buffer.from(key),
    value: codec.encodeRequest({
      id: `req-${offset}`,
      model: null,
      modelVersion: null,
      requestedAt: null,
      inputs: [{ name: 'x', shape: [4], data: Float32Array.from([first, 1, 0, 0]) }],
    }),
    headers: {},
    timestamp: 1000 + offset,
  };
}

async function until(condition: () => boolean): Promise<void> {
  for (let i = 0; i < 500 && !condition(); i++) await new Promise((r) => setTimeout(r, 5));
  expect(condition()).toBe(true);
}

describe('InferenceWorker with a canary', () => {
  it('splits each batch by key route, scores each part on its version and keeps batch order', async () => {
    const source = new FakeSource();
    const sink = new FakeSink();
    const stable = new FakeModel();
    const candidate = new TriplerModel();
    const rollout = new Rollout({ candidate, fraction: 0.3 });
    const worker = new InferenceWorker({
      source,
      sink,
      codec,
      model: new SwappableModel(stable),
      rollout,
      options: {
        resultTopic: 'results',
        deadLetterTopic: 'dead',
        maxBatchSize: 16,
        maxDelayMs: 1,
        maxQueued: 10_000,
        maxPayloadBytes: 10_000,
        commitIntervalMs: 0,
        drainTimeoutMs: 5000,
      },
    });
    await worker.start();
    const records = Array.from({ length: 200 }, (_, i) =>
      // Every 7th has no key (routed by request id); 666 makes the model fail for that one record.
      record(i, i % 7 === 0 ? null : `user-${i % 50}`, i === 13 || i === 101 ? 666 : i),
    );
    await source.deliver(records);
    await until(() => source.committed('requests', 0) === '200');

    const out = sink.sent;
    expect(out.map((r) => r.origin?.offset)).toEqual(records.map((r) => r.offset));
    const versionOfKey = new Map<string, string>();
    let canaryCount = 0;
    for (let i = 0; i < records.length; i++) {
      const input = records[i]!;
      const role = rollout.route(input.key, `req-${i}`);
      const version = role === 'canary' ? '8' : '7';
      if (role === 'canary') canaryCount++;
      const sent = out[i]!;
      if (i === 13 || i === 101) {
        expect(sent.topic).toBe('dead');
        continue;
      }
      expect(sent.topic).toBe('results');
      const result = codec.decodeResult(sent.value);
      expect(result.id).toBe(`req-${i}`);
      expect(result.modelVersion).toBe(version);
      expect(sent.headers[HEADER.modelVersion]).toBe(version);
      expect(Array.from(result.outputs[0]!.data)).toEqual(
        [i, 1, 0, 0].map((v) => v * (version === '8' ? 3 : 2)),
      );
      if (input.key) {
        const key = input.key.toString();
        expect(versionOfKey.get(key) ?? version).toBe(version);
        versionOfKey.set(key, version);
      }
    }
    // Both sides served, each batch part no larger than the batch limit.
    expect(canaryCount).toBeGreaterThan(0);
    expect(canaryCount).toBeLessThan(200);
    expect(Math.max(...stable.batchSizes, ...candidate.batchSizes)).toBeLessThanOrEqual(16);
    expect(candidate.batchSizes.reduce((a, b) => a + b, 0)).toBeGreaterThanOrEqual(canaryCount);
    expect(worker.metrics.snapshot).toMatchObject({ received: 200, produced: 198 });
    await worker.stop();
  });
});
