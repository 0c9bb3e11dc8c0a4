import { describe, expect, it } from 'vitest';
import { AvroCodec } from '../../src/codec/avro.js';
import type { InboundRecord } from '../../src/kafka/types.js';
import { ModelCatalog } from '../../src/model/catalog.js';
import type { BatchOutputs, ModelInfo, PackedBatch } from '../../src/model/types.js';
import { HEADER } from '../../src/worker/headers.js';
import { InferenceWorker } from '../../src/worker/worker.js';
import { FakeModel, FakeSink, FakeSource } from '../helpers/fakes.js';

const codec = new AvroCodec();

/** Multiplies by `factor`; name and version as given, so each result shows who scored it. */
class ScalingModel extends FakeModel {
  override readonly info: ModelInfo;
  constructor(
    name: string,
    version: string,
    private readonly factor: number,
    inputWidth = 4,
  ) {
    super();
    const base = new FakeModel().info;
    this.info = {
      ...base,
      name,
      version,
      inputs: [{ name: 'x', dtype: 'float32', shape: [inputWidth] }],
      outputs: [{ name: 'y', dtype: 'float32', shape: [inputWidth] }],
      labels: inputWidth === 4 ? base.labels : undefined,
    };
  }
  override async predict(batch: PackedBatch): Promise<BatchOutputs> {
    this.batchSizes.push(batch.size);
    return { y: batch.inputs.x!.map((v) => v * this.factor) };
  }
}

function record(
  offset: number,
  topic: string,
  model: string | null,
  version: string | null,
  width = 4,
): InboundRecord {
  return {
    topic,
    partition: 0,
    offset: String(offset),
    key: null,
    value: codec.encodeRequest({
      id: `req-${offset}`,
      model,
      modelVersion: version,
      requestedAt: null,
      inputs: [{ name: 'x', shape: [width], data: Float32Array.from({ length: width }, () => 1) }],
    }),
    headers: {},
    timestamp: 1000 + offset,
  };
}

async function until(condition: () => boolean): Promise<void> {
  for (let i = 0; i < 500 && !condition(); i++) await new Promise((r) => setTimeout(r, 5));
  expect(condition()).toBe(true);
}

describe('InferenceWorker serving several models and versions', () => {
  it('scores each request on the model and version it names or its topic maps to, in order; unknown ones are dead-lettered with their codes', async () => {
    const digits2 = new ScalingModel('digits', '2', 2);
    const digits1 = new ScalingModel('digits', '1', 1);
    const fraud = new ScalingModel('fraud', '4', 10, 3);
    const catalog = new ModelCatalog('digits')
      .add('digits', { main: digits2, pinned: [digits1] })
      .add('fraud', { main: fraud, pinned: [] })
      .route('payments', 'fraud');
    const source = new FakeSource();
    const sink = new FakeSink();
    const worker = new InferenceWorker({
      source,
      sink,
      codec,
      model: digits2,
      catalog,
      options: {
        resultTopic: 'results',
        deadLetterTopic: 'dead',
        maxBatchSize: 64,
        maxDelayMs: 5,
        maxQueued: 10_000,
        maxPayloadBytes: 10_000,
        commitIntervalMs: 0,
        drainTimeoutMs: 5000,
      },
    });
    await worker.start();
    // [topic, model, version, width, expected: model@version (scale) or an error code]
    const cases: [string, string | null, string | null, number, string][] = [
      ['requests', null, null, 4, 'digits@2 ×2'],
      ['requests', null, '1', 4, 'digits@1 ×1'],
      ['requests', 'fraud', null, 3, 'fraud@4 ×10'],
      ['payments', null, null, 3, 'fraud@4 ×10'],
      ['payments', 'digits', '2', 4, 'digits@2 ×2'],
      ['requests', 'nope', null, 4, 'UNKNOWN_MODEL'],
      ['requests', 'digits', '9', 4, 'UNKNOWN_MODEL_VERSION'],
      ['payments', null, null, 4, 'WRONG_SHAPE'], // fraud takes 3 values, not 4
    ];
    const next: Record<string, number> = { requests: 0, payments: 0 };
    const records = Array.from({ length: 160 }, (_, i) => {
      const [topic, model, version, width] = cases[i % cases.length]!;
      return record(next[topic]!++, topic, model, version, width);
    });
    await source.deliver(records);
    await until(
      () =>
        source.committed('requests', 0) === String(next.requests) &&
        source.committed('payments', 0) === String(next.payments),
    );
    await worker.stop();

    const sent = new Map(sink.sent.map((r) => [`${r.origin!.topic}/${r.origin!.offset}`, r]));
    expect(sent.size).toBe(160);
    records.forEach((input, i) => {
      const expected = cases[i % cases.length]![4];
      const out = sent.get(`${input.topic}/${input.offset}`)!;
      if (!expected.includes('@')) {
        expect(out.topic, `offset ${i}`).toBe('dead');
        expect(String(out.headers[HEADER.errorCode])).toBe(expected);
        return;
      }
      const [, name, version, scale] = /^(\w+)@(\d+) ×(\d+)$/.exec(expected)!;
      const result = codec.decodeResult(out.value);
      expect([result.model, result.modelVersion], `offset ${i}`).toEqual([name, version]);
      expect(result.outputs[0]!.data[0]).toBe(Number(scale));
    });
    // Mixed batches were split: each model saw only its own requests.
    expect(fraud.batchSizes.reduce((a, b) => a + b, 0)).toBe(40);
    expect(digits1.batchSizes.reduce((a, b) => a + b, 0)).toBe(20);
    expect(digits2.batchSizes.reduce((a, b) => a + b, 0)).toBe(40);
  });
});
