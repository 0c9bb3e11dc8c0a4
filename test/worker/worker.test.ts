import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import type { Logger } from '../../src/telemetry/logger.js';
import { AvroCodec } from '../../src/codec/avro.js';
import type { InboundRecord } from '../../src/kafka/types.js';
import { HEADER } from '../../src/worker/headers.js';
import { InferenceWorker, type WorkerOptions } from '../../src/worker/worker.js';
import { FakeModel, FakeSink, FakeSource, FakeTransactions } from '../helpers/fakes.js';

const codec = new AvroCodec();
const RESULTS = 'results';
const DLQ = 'dead';

function requestRecord(
  offset: number,
  x: number[],
  partition = 0,
  id = `req-${partition}-${offset}`,
): InboundRecord {
  return {
    topic: 'requests',
    partition,
    offset: String(offset),
    key: Buffer.from(`key-${offset}`),
    value: codec.encodeRequest({
      id,
      model: null,
      modelVersion: null,
      requestedAt: null,
      inputs: [{ name: 'x', shape: [x.length], data: Float32Array.from(x) }],
    }),
    headers: { traceparent: Buffer.from('00-abc-def-01') },
    timestamp: 1000 + offset,
  };
}

function rawRecord(offset: number, value: Buffer | null, partition = 0): InboundRecord {
  return {
    topic: 'requests',
    partition,
    offset: String(offset),
    key: null,
    value,
    headers: {},
    timestamp: 1,
  };
}

function setup(
  options: Partial<WorkerOptions> = {},
  model = new FakeModel(),
  transactions?: FakeTransactions,
  log?: Logger,
) {
  const source = new FakeSource();
  const sink = new FakeSink();
  const worker = new InferenceWorker({
    source,
    sink,
    transactions,
    ...(log ? { log } : {}),
    model,
    codec,
    options: {
      resultTopic: RESULTS,
      deadLetterTopic: DLQ,
      maxBatchSize: 8,
      maxDelayMs: 1,
      maxQueued: 1000,
      maxPayloadBytes: 10_000,
      commitIntervalMs: 0,
      drainTimeoutMs: 5000,
      ...options,
    },
  });
  return { source, sink, model, worker };
}

const settle = () => new Promise((resolve) => setTimeout(resolve, 20));

async function until(condition: () => boolean): Promise<void> {
  for (let i = 0; i < 500 && !condition(); i++) await new Promise((r) => setTimeout(r, 5));
  expect(condition()).toBe(true);
}

describe('InferenceWorker', () => {
  it('answers every request with the model output, keyed like the request, then commits', async () => {
    const { source, sink, worker, model } = setup();
    await worker.start();
    const records = Array.from({ length: 20 }, (_, i) => requestRecord(i, [i, 0, 1, 0]));
    await source.deliver(records);
    await until(() => source.committed('requests', 0) === '20');

    const results = sink.to(RESULTS);
    expect(results).toHaveLength(20);
    const decoded = results.map((r) => codec.decodeResult(r.value));
    expect(decoded.map((r) => r.id)).toEqual(records.map((_, i) => `req-0-${i}`));
    expect(Array.from(decoded[5]!.outputs[0]!.data)).toEqual([10, 0, 2, 0]);
    expect(decoded[5]!.label).toBe('a');
    expect(decoded[0]!.label).toBe('c'); // [0,0,2,0]
    expect(decoded[0]!).toMatchObject({ model: 'doubler', modelVersion: '7', requestedAt: 1000 });
    expect(results[3]!.key?.toString()).toBe('key-3');
    expect(results[3]!.headers).toMatchObject({
      [HEADER.correlationId]: 'req-0-3',
      [HEADER.model]: 'doubler',
      [HEADER.modelVersion]: '7',
    });
    expect(Math.max(...model.batchSizes)).toBeLessThanOrEqual(8);
    expect(worker.metrics.snapshot).toMatchObject({ received: 20, produced: 20, deadLettered: 0 });
    await worker.stop();
  });

  it('dead-letters undecodable, empty, oversized, mis-shaped, NaN and wrong-model records and answers the rest', async () => {
    const { source, sink, worker } = setup({ maxPayloadBytes: 200 });
    await worker.start();
    const wrongModel = {
      ...requestRecord(5, [1, 1, 1, 1]),
      value: codec.encodeRequest({
        id: 'wm',
        model: 'other',
        modelVersion: null,
        requestedAt: null,
        inputs: [{ name: 'x', shape: [4], data: new Float32Array(4) }],
      }),
    };
    const batch = [
      requestRecord(0, [1, 2, 3, 4]),
      rawRecord(1, Buffer.from('garbage that is not avro')),
      rawRecord(2, null),
      rawRecord(3, Buffer.alloc(500, 1)),
      requestRecord(4, [1, 2, 3]),
      wrongModel,
      requestRecord(6, [1, Number.NaN, 0, 0]),
      requestRecord(7, [0, 0, 0, 9]),
    ];
    await source.deliver(batch);
    await until(() => source.committed('requests', 0) === '8');

    const letters = sink.to(DLQ);
    const codes = Object.fromEntries(
      letters.map((l) => [l.headers[HEADER.sourceOffset], String(l.headers[HEADER.errorCode])]),
    );
    expect(codes).toEqual({
      '1': 'DECODE_FAILED',
      '2': 'EMPTY_PAYLOAD',
      '3': 'PAYLOAD_TOO_LARGE',
      '4': 'WRONG_SHAPE',
      '5': 'UNKNOWN_MODEL',
      '6': 'NON_FINITE',
    });
    const garbage = letters.find((l) => l.headers[HEADER.sourceOffset] === '1')!;
    expect(garbage.value.toString()).toBe('garbage that is not avro');
    expect(garbage.headers).toMatchObject({
      [HEADER.sourceTopic]: 'requests',
      [HEADER.sourcePartition]: '0',
      [HEADER.errorCategory]: 'unprocessable',
    });
    const shaped = letters.find((l) => l.headers[HEADER.sourceOffset] === '4')!;
    expect(shaped.headers[HEADER.correlationId]).toBe('req-0-4');
    expect(shaped.headers.traceparent?.toString()).toBe('00-abc-def-01');
    expect(sink.to(RESULTS).map((r) => codec.decodeResult(r.value).id)).toEqual([
      'req-0-0',
      'req-0-7',
    ]);
    expect(worker.metrics.snapshot.deadLetteredByCode).toMatchObject({
      DECODE_FAILED: 1,
      WRONG_SHAPE: 1,
    });
    await worker.stop();
  });

  it('does not commit before the broker acknowledged the results', async () => {
    const { source, sink, worker } = setup();
    await worker.start();
    sink.holding = true;
    await source.deliver([requestRecord(0, [1, 1, 1, 1]), requestRecord(1, [1, 1, 1, 1])]);
    await settle();
    expect(source.commits).toEqual([]);
    expect(worker.inFlight).toBe(2);
    sink.release();
    await until(() => source.committed('requests', 0) === '2');
    await worker.stop();
  });

  it('retries a failed send and commits only after it succeeds', async () => {
    const { source, sink, worker } = setup();
    await worker.start();
    sink.failNext = 2;
    await source.deliver([requestRecord(0, [1, 1, 1, 1])]);
    await until(() => source.committed('requests', 0) === '1');
    expect(sink.attempts).toBe(3);
    expect(sink.to(RESULTS)).toHaveLength(1);
    expect(worker.metrics.snapshot.sendRetries).toBe(2);
    await worker.stop();
  });

  it('stops fetching while sends fail and fetches again once a send succeeds', async () => {
    const { source, sink, worker } = setup();
    await worker.start();
    sink.failNext = 2;
    await source.deliver([requestRecord(0, [1, 0, 0, 0])]);
    await until(() => sink.attempts >= 1 && source.paused);
    expect(source.events).toContain('pause');
    await until(() => source.committed('requests', 0) === '1');
    expect(source.paused).toBe(false);
    expect(source.events.filter((e) => e === 'pause' || e === 'resume')).toEqual([
      'pause',
      'resume',
    ]);
  });

  it('dead-letters a batch the model fails on as MODEL_FAILED, with category failed', async () => {
    const { source, sink, worker } = setup({ maxBatchSize: 1 });
    await worker.start();
    await source.deliver([requestRecord(0, [666, 0, 0, 0]), requestRecord(1, [1, 0, 0, 0])]);
    await until(() => source.committed('requests', 0) === '2');
    const [letter] = sink.to(DLQ);
    expect(letter!.headers).toMatchObject({
      [HEADER.errorCode]: 'MODEL_FAILED',
      [HEADER.errorCategory]: 'failed',
      [HEADER.correlationId]: 'req-0-0',
    });
    expect(sink.to(RESULTS)).toHaveLength(1);
    await worker.stop();
  });

  it('keeps each partition gap-free when partitions interleave', async () => {
    const { source, worker } = setup();
    await worker.start();
    await source.deliver([requestRecord(10, [1, 0, 0, 0], 0), requestRecord(11, [1, 0, 0, 0], 0)]);
    await source.deliver([requestRecord(3, [1, 0, 0, 0], 1)]);
    await until(
      () => source.committed('requests', 0) === '12' && source.committed('requests', 1) === '4',
    );
    await worker.stop();
  });

  it('produces each partition in offset order while batches infer concurrently and finish out of order', async () => {
    // Three replicas whose answers come back in random order.
    const model = Object.assign(new FakeModel(), { concurrency: 3 });
    const predict = model.predict.bind(model);
    model.predict = async (batch) => {
      await new Promise((r) => setTimeout(r, Math.random() * 15));
      return predict(batch);
    };
    const { source, sink, worker } = setup({ maxBatchSize: 3 }, model);
    await worker.start();
    for (let o = 0; o < 60; o += 6) {
      await source.deliver(
        [0, 1, 2, 3, 4, 5].map((k) => requestRecord(o + k, [1, 0, 0, 0], k % 2)),
      );
    }
    await until(() => sink.to(RESULTS).length === 60);
    for (const partition of [0, 1]) {
      const offsets = sink
        .to(RESULTS)
        .map((r) => codec.decodeResult(r.value).id)
        .filter((id) => id.startsWith(`req-${partition}-`))
        .map((id) => Number(id.split('-')[2]));
      expect(offsets).toHaveLength(30);
      expect(offsets).toEqual([...offsets].sort((a, b) => a - b));
    }
    expect(sink.maxConcurrentSends).toBe(1);
    await worker.stop();
  });

  it('answers a record read twice only once (the consumer rejoined and read from the committed offset)', async () => {
    const { source, sink, worker, model } = setup();
    await worker.start();
    source.assign([{ topic: 'requests', partition: 0 }]);
    const first = Array.from({ length: 6 }, (_, i) => requestRecord(i, [i, 0, 0, 0]));
    await source.deliver(first.slice(0, 4));
    // Read again from offset 0 while the first copies are still in flight, then onwards.
    await source.deliver(Array.from({ length: 6 }, (_, i) => requestRecord(i, [i, 0, 0, 0])));
    await until(() => source.committed('requests', 0) === '6');
    const ids = sink.to(RESULTS).map((r) => codec.decodeResult(r.value).id);
    expect(ids).toEqual(first.map((_, i) => `req-0-${i}`));
    expect(model.batchSizes.reduce((a, b) => a + b, 0)).toBe(6);
    expect(worker.metrics.snapshot.skipped).toBe(4);
  });

  it('stop() pauses fetching, answers queued requests, commits, then leaves the group', async () => {
    const { source, sink, worker } = setup({ maxDelayMs: 60_000, maxBatchSize: 100 });
    await worker.start();
    await source.deliver([requestRecord(0, [1, 0, 0, 0]), requestRecord(1, [1, 0, 0, 0])]);
    await settle();
    expect(sink.sent).toHaveLength(0); // waiting for the batch to fill
    const report = await worker.stop();
    expect(report).toEqual({ unanswered: 0, drained: true });
    expect(sink.to(RESULTS)).toHaveLength(2);
    expect(source.committed('requests', 0)).toBe('2');
    expect(source.events[0]).toBe('pause');
    expect(source.events.at(-1)).toBe('stop');
    expect(source.events.lastIndexOf('commit')).toBeLessThan(source.events.indexOf('stop'));
  });

  it('stop() gives up at the drain deadline without committing what was not acknowledged, and says what was left', async () => {
    const lines: { msg: string; left?: unknown }[] = [];
    const log = pino({ level: 'info' }, { write: (line: string) => lines.push(JSON.parse(line)) });
    const { source, sink, worker } = setup({ drainTimeoutMs: 50 }, new FakeModel(), undefined, log);
    await worker.start();
    sink.holding = true;
    await source.deliver([
      requestRecord(7, [1, 0, 0, 0]),
      requestRecord(8, [1, 0, 0, 0]),
      requestRecord(3, [1, 0, 0, 0], 2),
    ]);
    const report = await worker.stop();
    expect(report).toEqual({ unanswered: 3, drained: false });
    expect(source.committed('requests', 0)).toBeUndefined();
    const last = lines.at(-1)!;
    expect(last.msg).toContain('3 request(s) unanswered in 2 partition(s)');
    expect(last.msg).toContain('requests[0] from offset 7: 2');
    expect(last.msg).toContain('requests[2] from offset 3: 1');
    sink.release();
  });

  it('pauses fetching at maxQueued unanswered records and resumes at half', async () => {
    const { source, sink, worker } = setup({ maxQueued: 4 });
    await worker.start();
    sink.holding = true;
    await source.deliver([0, 1, 2].map((o) => requestRecord(o, [1, 0, 0, 0])));
    expect(source.paused).toBe(false);
    await source.deliver([requestRecord(3, [1, 0, 0, 0])]);
    expect(source.paused).toBe(true);
    expect(worker.isPaused).toBe(true);
    sink.release();
    await until(() => source.committed('requests', 0) === '4');
    expect(source.paused).toBe(false);
    expect(source.events.filter((e) => e === 'pause' || e === 'resume')).toEqual([
      'pause',
      'resume',
    ]);
    await worker.stop();
  });

  it('does not resume fetching once stopping', async () => {
    const { source, sink, worker } = setup({ maxQueued: 1 });
    await worker.start();
    sink.holding = true;
    await source.deliver([requestRecord(0, [1, 0, 0, 0])]);
    expect(source.paused).toBe(true);
    const stopped = worker.stop();
    sink.release();
    await stopped;
    expect(source.events).not.toContain('resume');
  });

  describe('exactly-once', () => {
    it('commits results, dead letters and the offset after them through the partition transaction, never the plain sink', async () => {
      const transactions = new FakeTransactions();
      const { source, sink, worker } = setup({}, new FakeModel(), transactions);
      await worker.start();
      source.assign([{ topic: 'requests', partition: 0 }]);
      await until(() => source.held.size === 0);
      await source.deliver([
        requestRecord(0, [1, 0, 0, 0]),
        rawRecord(1, Buffer.from('not avro')),
        requestRecord(2, [0, 1, 0, 0]),
      ]);
      await until(() => transactions.committed.get(0) === '3');
      expect(transactions.commits.flatMap((c) => c.values)).toHaveLength(3);
      expect(sink.sent).toEqual([]);
      expect(source.commits).toEqual([]);
      expect(worker.metrics.snapshot).toMatchObject({ produced: 2, deadLettered: 1 });
    });

    it('replaces an answer over maxRecordBytes before it joins a transaction, so the partition moves on', async () => {
      const transactions = new FakeTransactions();
      const { source, worker } = setup({ maxRecordBytes: 1500 }, new FakeModel(), transactions);
      await worker.start();
      source.assign([{ topic: 'requests', partition: 0 }]);
      await until(() => source.held.size === 0);
      const huge = { ...requestRecord(0, [1, 0, 0, 0]), key: Buffer.alloc(2000, 'k') };
      await source.deliver([huge, requestRecord(1, [0, 1, 0, 0])]);
      await until(() => transactions.committed.get(0) === '2');
      // Too large as a result, as a dead letter and without its value: only its offset commits.
      expect(transactions.commits.flatMap((c) => c.values)).toHaveLength(1);
      expect(worker.metrics.snapshot.deadLetteredByCode).toMatchObject({
        KAFKA_RECORD_REJECTED: expect.any(Number),
      });
    });
  });
});
