import { describe, expect, it } from 'vitest';
import { StreamscoreError } from '../../src/errors.js';
import type { BatchOutputs, PackedBatch } from '../../src/model/types.js';
import { AvroCodec } from '../../src/codec/avro.js';
import type { InboundRecord } from '../../src/kafka/types.js';
import { HEADER } from '../../src/worker/headers.js';
import { predictNarrowing, type Outcome } from '../../src/worker/narrow.js';
import { InferenceWorker } from '../../src/worker/worker.js';
import { FakeModel, FakeSink, FakeSource } from '../helpers/fakes.js';

/** One value per row; the model doubles it. Rows are ids: the test picks which ids fail. */
const pack = (items: readonly number[]): PackedBatch => ({
  size: items.length,
  inputs: { x: Float32Array.from(items) },
});

class ScriptedModel {
  calls: number[][] = [];
  /** Ids that make any batch holding them throw this non-retriable error. */
  poison = new Set<number>();
  /** Ids that fail retriably this many more times (any batch holding them). */
  flaky = new Map<number, number>();
  /** Ids that crash their replica every time. */
  crashing = new Set<number>();

  async predict(batch: PackedBatch): Promise<BatchOutputs> {
    const ids = Array.from(batch.inputs.x!);
    this.calls.push(ids);
    const poisoned = ids.find((id) => this.poison.has(id));
    if (poisoned !== undefined)
      throw new StreamscoreError('MODEL_FAILED', `cannot score ${poisoned}`);
    const crashed = ids.find((id) => this.crashing.has(id));
    if (crashed !== undefined)
      throw new StreamscoreError('REPLICA_CRASHED', `replica died on ${crashed}`);
    for (const id of ids) {
      const left = this.flaky.get(id) ?? 0;
      if (left > 0) {
        this.flaky.set(id, left - 1);
        throw new StreamscoreError('MODEL_FAILED', `busy (${id})`, { retriable: true });
      }
    }
    return { y: Float32Array.from(ids, (id) => id * 2) };
  }
}

/** Each item's doubled value, or its error code. */
function answers(items: number[], outcomes: Outcome[]): (number | string)[] {
  return items.map((_, i) => {
    const o = outcomes[i]!;
    return o.ok ? o.outputs.y![o.index]! : o.error.code;
  });
}

const ids = (n: number) => Array.from({ length: n }, (_, i) => i + 1);

describe('predictNarrowing', () => {
  it('runs a healthy batch in exactly one predict and returns its outputs whole', async () => {
    const model = new ScriptedModel();
    const result = await predictNarrowing(model, ids(16), pack);
    expect(model.calls).toHaveLength(1);
    expect(result.outcomes).toBeUndefined();
    expect(Array.from(result.outputs!.y!)).toEqual(ids(16).map((i) => i * 2));
  });

  it('fails only the records the model throws for; the others are scored, in batch order', async () => {
    const model = new ScriptedModel();
    model.poison = new Set([3, 11]);
    const items = ids(16);
    const { outcomes } = await predictNarrowing(model, items, pack);
    expect(answers(items, outcomes!)).toEqual(
      items.map((i) => (i === 3 || i === 11 ? 'MODEL_FAILED' : i * 2)),
    );
    const failed = outcomes!.filter((o) => !o.ok);
    // Non-retriable: one predict of the record alone, no retry.
    for (const f of failed) expect(f.history).toHaveLength(1);
    expect(model.calls.filter((c) => c.length === 1 && c[0] === 3)).toHaveLength(1);
    // Bisection, not one predict per record: 1 + 2·log2(16) per poisoned record at most.
    expect(model.calls.length).toBeLessThan(1 + 2 * 4 * 2);
  });

  it('retries a retriable failure of one record up to maxAttempts, then fails it with its history', async () => {
    const model = new ScriptedModel();
    model.crashing = new Set([5]);
    const items = ids(8);
    const { outcomes } = await predictNarrowing(model, items, pack, { maxAttempts: 4 });
    const failed = outcomes![4]!;
    expect(failed.ok).toBe(false);
    if (failed.ok) return;
    expect(failed.error.code).toBe('REPLICA_CRASHED');
    expect(failed.history.map((e) => e.code)).toEqual(Array(4).fill('REPLICA_CRASHED'));
    expect(model.calls.filter((c) => c.length === 1 && c[0] === 5)).toHaveLength(4);
    expect(answers(items, outcomes!).filter((a) => typeof a === 'number')).toHaveLength(7);
  });

  it('scores a record whose retriable failure clears before maxAttempts', async () => {
    const model = new ScriptedModel();
    model.flaky = new Map([[2, 3]]); // fails in the batch, in its half, alone once, then passes
    const items = ids(4);
    const { outcomes } = await predictNarrowing(model, items, pack, { maxAttempts: 5 });
    expect(answers(items, outcomes!)).toEqual([2, 4, 6, 8]);
  });

  it('stops retrying as soon as a record fails non-retriably', async () => {
    const model = new ScriptedModel();
    let n = 0;
    const predict = model.predict.bind(model);
    model.predict = async (batch) => {
      if (batch.size === 1 && batch.inputs.x![0] === 1) {
        n++;
        throw n === 1
          ? new StreamscoreError('REPLICA_CRASHED', 'died')
          : new StreamscoreError('MODEL_FAILED', 'bad input');
      }
      return predict(batch);
    };
    const { outcomes } = await predictNarrowing(model, [1], pack, { maxAttempts: 5 });
    const [only] = outcomes!;
    expect(only!.ok).toBe(false);
    if (only!.ok) return;
    expect(only!.error.code).toBe('MODEL_FAILED');
    expect(only!.history.map((e) => e.code)).toEqual(['REPLICA_CRASHED', 'MODEL_FAILED']);
  });

  it('wraps non-streamscore throws as MODEL_FAILED, not retried', async () => {
    const model = {
      calls: 0,
      async predict(): Promise<BatchOutputs> {
        this.calls++;
        throw new Error('tensor shape mismatch');
      },
    };
    const { outcomes } = await predictNarrowing(model, [1, 2], pack);
    expect(outcomes!.map((o) => (o.ok ? 'ok' : o.error.code))).toEqual([
      'MODEL_FAILED',
      'MODEL_FAILED',
    ]);
    expect(model.calls).toBe(3); // the pair, then each alone once
  });
});

describe('InferenceWorker with a model that fails for some inputs', () => {
  const codec = new AvroCodec();
  const request = (offset: number, first: number): InboundRecord => ({
    topic: 'requests',
    partition: 0,
    offset: String(offset),
    key: null,
    value: codec.encodeRequest({
      id: `r-${offset}`,
      model: null,
      modelVersion: null,
      requestedAt: null,
      inputs: [{ name: 'x', shape: [4], data: Float32Array.from([first, 1, 2, 3]) }],
    }),
    headers: {},
    timestamp: 1,
  });

  async function run(model: FakeModel, firsts: number[]) {
    const source = new FakeSource();
    const sink = new FakeSink();
    const worker = new InferenceWorker({
      source,
      sink,
      model,
      codec,
      options: {
        resultTopic: 'results',
        deadLetterTopic: 'dlq',
        failedTopic: 'failed',
        maxAttempts: 3,
        maxBatchSize: firsts.length,
        maxDelayMs: 1,
        maxQueued: 1000,
        maxPayloadBytes: 10_000,
        commitIntervalMs: 0,
        drainTimeoutMs: 5000,
      },
    });
    await worker.start();
    await source.deliver(firsts.map((v, i) => request(i, v)));
    for (let i = 0; i < 500 && source.committed('requests', 0) !== String(firsts.length); i++)
      await new Promise((r) => setTimeout(r, 5));
    await worker.stop();
    return { sink, source };
  }

  it('dead-letters only the inputs the model throws for, to the failed topic, and answers the rest', async () => {
    const model = new FakeModel(); // throws for any batch holding a row whose first value is 666
    const { sink, source } = await run(model, [1, 2, 666, 4, 5, 6, 666, 8]);
    expect(source.committed('requests', 0)).toBe('8');
    expect(sink.to('dlq')).toEqual([]);
    const failed = sink.to('failed');
    expect(failed.map((l) => l.headers[HEADER.correlationId])).toEqual(['r-2', 'r-6']);
    expect(failed[0]!.headers).toMatchObject({
      [HEADER.errorCode]: 'MODEL_FAILED',
      [HEADER.errorCategory]: 'failed',
    });
    expect(failed[0]!.headers[HEADER.errorAttempts]).toBeUndefined(); // not retriable: tried once
    const answered = sink.to('results').map((r) => codec.decodeResult(r.value));
    expect(answered.map((r) => r.id)).toEqual(['r-0', 'r-1', 'r-3', 'r-4', 'r-5', 'r-7']);
    expect(Array.from(answered[2]!.outputs[0]!.data)).toEqual([8, 2, 4, 6]); // r-3's own row
  });

  it('retries a retriably failing input maxAttempts times and reports its history', async () => {
    const model = new FakeModel();
    const predict = model.predict.bind(model);
    model.predict = async (batch) => {
      const x = batch.inputs.x!;
      for (let i = 0; i < x.length; i += 4)
        if (x[i] === 13) throw new StreamscoreError('REPLICA_CRASHED', 'replica died');
      return predict(batch);
    };
    const { sink } = await run(model, [1, 13, 3, 4]);
    const [letter] = sink.to('failed');
    expect(letter!.headers).toMatchObject({
      [HEADER.correlationId]: 'r-1',
      [HEADER.errorCode]: 'REPLICA_CRASHED',
      [HEADER.errorCategory]: 'failed',
      [HEADER.errorAttempts]: '3',
      [HEADER.errorHistory]:
        'REPLICA_CRASHED: replica died; REPLICA_CRASHED: replica died; REPLICA_CRASHED: replica died',
    });
    expect(sink.to('results')).toHaveLength(3);
  });

  it('a healthy batch is one predict', async () => {
    const model = new FakeModel();
    await run(model, [1, 2, 3, 4]);
    expect(model.batchSizes).toEqual([4]);
  });
});
