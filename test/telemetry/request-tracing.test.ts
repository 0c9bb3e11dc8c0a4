import { SpanKind } from '@opentelemetry/api';
import { hrTimeToMilliseconds } from '@opentelemetry/core';
import {
  InMemorySpanExporter,
  SimpleSpanProcessor,
  TraceIdRatioBasedSampler,
  SamplingDecision,
} from '@opentelemetry/sdk-trace';
import { describe, expect, it } from 'vitest';
import { AvroCodec } from '../../src/codec/avro.js';
import type { InboundRecord } from '../../src/kafka/types.js';
import { SpanBuilder } from '../../src/telemetry/span-builder.js';
import { LocalSpanSink, RequestTracing, SPAN_ATTRIBUTE } from '../../src/telemetry/tracing.js';
import { InferenceWorker } from '../../src/worker/worker.js';
import { FakeModel, FakeSink, FakeSource } from '../helpers/fakes.js';

const codec = new AvroCodec();
const TRACE_ID = '4bf92f3577b34da6a3ce929d0e0e4736';
const PRODUCER_SPAN = '00f067aa0ba902b7';

function request(offset: number, x: number[], traceparent?: string): InboundRecord {
  return {
    topic: 'requests',
    partition: 0,
    offset: String(offset),
    key: Buffer.from(`k${offset}`),
    value: codec.encodeRequest({
      id: `req-${offset}`,
      model: null,
      modelVersion: null,
      requestedAt: null,
      inputs: [{ name: 'x', shape: [x.length], data: Float32Array.from(x) }],
    }),
    headers: traceparent ? { traceparent: Buffer.from(traceparent) } : {},
    timestamp: Date.now(),
  };
}

/** Request tracing whose spans are built on this thread into `exporter`. */
function tracingInto(
  exporter: InMemorySpanExporter,
  sampleRatio = 1,
  /** Requests in flight before the table grows: a small table makes slots be reused. */
  capacity?: number,
): RequestTracing {
  const builder = new SpanBuilder({
    spanProcessors: [new SimpleSpanProcessor({ exporter })],
    groupId: 'the-group',
  });
  return new RequestTracing(new LocalSpanSink(builder), sampleRatio, capacity);
}

/** A started worker over fakes, traced by `tracing`. */
async function tracedWorker(tracing: RequestTracing) {
  const source = new FakeSource();
  const sink = new FakeSink();
  const worker = new InferenceWorker({
    source,
    sink,
    codec,
    model: new FakeModel(),
    tracing,
    options: {
      resultTopic: 'results',
      deadLetterTopic: 'dead',
      maxBatchSize: 8,
      maxDelayMs: 1,
      maxQueued: 1000,
      maxPayloadBytes: 10_000,
      commitIntervalMs: 0,
      drainTimeoutMs: 5000,
    },
  });
  await worker.start();
  return { source, sink, worker };
}

async function until(condition: () => boolean): Promise<void> {
  for (let i = 0; i < 500 && !condition(); i++) await new Promise((r) => setTimeout(r, 5));
  expect(condition()).toBe(true);
}

describe('request tracing in the worker', () => {
  it('continues the producer trace: process span per request, batch span and send span linked to each, request context in the result headers', async () => {
    const exporter = new InMemorySpanExporter();
    const tracing = tracingInto(exporter);
    const { source, sink, worker } = await tracedWorker(tracing);
    await source.deliver([
      request(0, [1, 0, 0, 0], `00-${TRACE_ID}-${PRODUCER_SPAN}-01`),
      request(1, [0, 1, 0, 0]),
      {
        ...request(2, [0, 0, 1, 0], `00-${TRACE_ID}-${PRODUCER_SPAN}-01`),
        value: Buffer.from('?'),
      },
    ]);
    await until(() => source.committed('requests', 0) === '3');
    await worker.stop();
    // Every request's tracing state was let go once it was answered.
    expect(tracing.inFlight).toBe(0);

    const spans = exporter.getFinishedSpans();
    const processSpans = spans.filter((s) => s.name === 'process requests');
    expect(processSpans).toHaveLength(3);
    const [first, second, poison] = processSpans.sort(
      (a, b) =>
        Number(a.attributes['messaging.kafka.offset']) -
        Number(b.attributes['messaging.kafka.offset']),
    );
    // The producer's context is the parent: the request span is in the producer's trace.
    expect(first!.spanContext().traceId).toBe(TRACE_ID);
    expect(first!.parentSpanContext?.spanId).toBe(PRODUCER_SPAN);
    expect(first!.kind).toBe(SpanKind.CONSUMER);
    expect(first!.attributes).toMatchObject({
      'messaging.system': 'kafka',
      'messaging.destination.name': 'requests',
      'messaging.consumer.group.name': 'the-group',
      'messaging.message.id': 'req-0',
      [SPAN_ATTRIBUTE.outcome]: 'result',
    });
    expect(first!.attributes[SPAN_ATTRIBUTE.batchWaitMs]).toEqual(expect.any(Number));
    expect(first!.attributes[SPAN_ATTRIBUTE.inferenceMs]).toEqual(expect.any(Number));
    // Read in one fetch: their spans start together.
    expect(second!.startTime).toEqual(first!.startTime);
    expect(poison!.startTime).toEqual(first!.startTime);
    // No traceparent: a new trace.
    expect(second!.spanContext().traceId).not.toBe(TRACE_ID);
    expect(poison!.attributes[SPAN_ATTRIBUTE.outcome]).toBe('dead-letter');
    expect(poison!.attributes[SPAN_ATTRIBUTE.errorCode]).toBe('DECODE_FAILED');

    const batch = spans.find((s) => s.name === 'infer doubler')!;
    expect(batch.links.map((l) => l.context.spanId).sort()).toEqual(
      [first!.spanContext().spanId, second!.spanContext().spanId].sort(),
    );
    expect(batch.attributes).toMatchObject({ [SPAN_ATTRIBUTE.model]: 'doubler' });

    // One send span per batch of answers, linked to each request; the poison record's dead
    // letter went out in a batch of its own.
    const sends = spans.filter((s) => s.name === 'send results');
    expect(sends).toHaveLength(1);
    expect(sends[0]!.kind).toBe(SpanKind.PRODUCER);
    expect(sends[0]!.attributes['messaging.batch.message_count']).toBe(2);
    expect(sends[0]!.links.map((l) => l.context.spanId).sort()).toEqual(
      [first!.spanContext().spanId, second!.spanContext().spanId].sort(),
    );
    const deadSend = spans.find((s) => s.name === 'send dead')!;
    expect(deadSend.links.map((l) => l.context.spanId)).toEqual([poison!.spanContext().spanId]);
    // The result carries its request's span context: downstream consumers continue the trace.
    const result = sink.to('results').find((r) => r.key?.toString() === 'k0')!;
    expect(String(result.headers['traceparent'])).toBe(
      `00-${TRACE_ID}-${first!.spanContext().spanId}-01`,
    );
    // A dead letter keeps the request's own headers.
    const dead = sink.to('dead')[0]!;
    expect(String(dead.headers['traceparent'])).toBe(`00-${TRACE_ID}-${PRODUCER_SPAN}-01`);
  });

  it('records the batch and send spans of sampled requests only, and carries unsampled contexts on', async () => {
    const sampledExporter = new InMemorySpanExporter();
    // Requests follow their producer's decision; new traces are never sampled at ratio 0.
    const tracing = tracingInto(sampledExporter, 0);
    const { source, sink, worker } = await tracedWorker(tracing);
    const UNSAMPLED = `00-${'1'.repeat(32)}-${'2'.repeat(16)}-00`;
    // Two batches: one with a sampled request among unsampled ones, one with none sampled.
    await source.deliver([
      request(0, [1, 0, 0, 0], UNSAMPLED),
      request(1, [0, 1, 0, 0], `00-${TRACE_ID}-${PRODUCER_SPAN}-01`),
      request(2, [0, 0, 1, 0]),
    ]);
    await until(() => source.committed('requests', 0) === '3');
    await source.deliver([request(3, [1, 1, 0, 0], UNSAMPLED), request(4, [0, 0, 0, 1])]);
    await until(() => source.committed('requests', 0) === '5');
    await worker.stop();
    expect(tracing.inFlight).toBe(0);

    const spans = sampledExporter.getFinishedSpans();
    const processSpans = spans.filter((s) => s.name === 'process requests');
    expect(processSpans).toHaveLength(1);
    const sampledSpanId = processSpans[0]!.spanContext().spanId;
    const batches = spans.filter((s) => s.name === 'infer doubler');
    expect(batches).toHaveLength(1);
    expect(batches[0]!.links.map((l) => l.context.spanId)).toEqual([sampledSpanId]);
    const sends = spans.filter((s) => s.name === 'send results');
    expect(sends).toHaveLength(1);
    expect(sends[0]!.links.map((l) => l.context.spanId)).toEqual([sampledSpanId]);
    // Every result carries a traceparent; an unsampled producer's trace stays unsampled downstream.
    const results = sink.to('results');
    expect(results).toHaveLength(5);
    const k0 = results.find((r) => r.key?.toString() === 'k0')!;
    expect(String(k0.headers['traceparent'])).toMatch(
      new RegExp(`^00-${'1'.repeat(32)}-[0-9a-f]{16}-00$`),
    );
    const k1 = results.find((r) => r.key?.toString() === 'k1')!;
    expect(String(k1.headers['traceparent'])).toBe(`00-${TRACE_ID}-${sampledSpanId}-01`);
  });
});

describe('RequestTracing on its own', () => {
  const answer = (tracing: RequestTracing, records: InboundRecord[]) => {
    const outs = records.map((r) => ({
      topic: 'results',
      key: r.key,
      value: Buffer.alloc(0),
      headers: {} as Record<string, string | Buffer>,
    }));
    for (const r of records) tracing.received(r);
    tracing.sending(records, outs, 'results');
    for (const r of records) tracing.answered(r, 'result');
    return outs;
  };

  it('keeps new traces at the sampling ratio, decided on the trace id as the SDK sampler does', () => {
    const exporter = new InMemorySpanExporter();
    const tracing = tracingInto(exporter, 0.5);
    const records = Array.from({ length: 400 }, (_, i) => request(i, [1, 2, 3, 4]));
    const outs = answer(tracing, records);
    const sdk = new TraceIdRatioBasedSampler(0.5);
    const kept = outs.filter((o) => String(o.headers['traceparent']).endsWith('-01'));
    for (const o of outs) {
      const [, traceId] = String(o.headers['traceparent']).split('-');
      const keep = sdk.shouldSample({} as never, traceId!).decision;
      expect(String(o.headers['traceparent']).endsWith('-01')).toBe(
        keep === SamplingDecision.RECORD_AND_SAMPLED,
      );
    }
    expect(kept.length).toBeGreaterThan(120);
    expect(kept.length).toBeLessThan(280);
    // Exactly the kept ones were recorded, each with the id its result carries.
    const recorded = exporter.getFinishedSpans().filter((s) => s.name === 'process requests');
    expect(recorded.map((s) => s.spanContext().spanId).sort()).toEqual(
      kept.map((o) => String(o.headers['traceparent']).split('-')[2]).sort(),
    );
  });

  it('pause(): requests read while paused are not traced at all; those already traced finish; resume() traces again at a new ratio', () => {
    const exporter = new InMemorySpanExporter();
    const tracing = tracingInto(exporter);
    const outOf = (r: InboundRecord) => ({
      topic: 'results',
      key: r.key,
      value: Buffer.alloc(0),
      headers: {} as Record<string, string | Buffer>,
    });
    const before = request(0, [1], `00-${TRACE_ID}-${PRODUCER_SPAN}-01`);
    tracing.received(before);
    tracing.pause();
    expect(tracing.state).toEqual({ configured: true, on: false, sampleRatio: 1, inFlight: 1 });
    // Sampled by its producer, but read while paused: nothing is noted, as with tracing off.
    const during = request(1, [1], `00-${TRACE_ID}-${PRODUCER_SPAN}-01`);
    tracing.received(during);
    expect(during.trace).toBeUndefined();
    const records = [before, during];
    const outs = records.map(outOf);
    tracing.batch(records, { name: 'm', version: '1', backend: 'cpu' }, 0, [0, 0])(1);
    tracing.sending(records, outs, 'results');
    for (const r of records) tracing.answered(r, 'result');
    expect(tracing.inFlight).toBe(0);
    const processSpans = () =>
      exporter.getFinishedSpans().filter((s) => s.name === 'process requests');
    expect(processSpans().map((s) => s.attributes['messaging.kafka.offset'])).toEqual([0]);
    expect(String(outs[0]!.headers['traceparent'])).toMatch(new RegExp(`^00-${TRACE_ID}-`));
    expect(outs[1]!.headers['traceparent']).toBeUndefined();
    const batch = exporter.getFinishedSpans().find((s) => s.name === 'infer m')!;
    expect(batch.links).toHaveLength(1);

    expect(() => tracing.resume(0)).toThrow(RangeError);
    expect(() => tracing.resume(1.5)).toThrow(RangeError);
    expect(() => tracing.resume(Number.NaN)).toThrow(RangeError);
    expect(tracing.state.on).toBe(false);
    tracing.resume(0.5);
    expect(tracing.state).toEqual({ configured: true, on: true, sampleRatio: 0.5, inFlight: 0 });
    const fresh = Array.from({ length: 200 }, (_, i) => request(10 + i, [1]));
    const freshOuts = answer(tracing, fresh);
    const kept = freshOuts.filter((o) => String(o.headers['traceparent']).endsWith('-01'));
    // New traces at the new ratio, on the SDK's rule.
    const sdk = new TraceIdRatioBasedSampler(0.5);
    for (const o of freshOuts) {
      const [, traceId] = String(o.headers['traceparent']).split('-');
      expect(String(o.headers['traceparent']).endsWith('-01')).toBe(
        sdk.shouldSample({} as never, traceId!).decision === SamplingDecision.RECORD_AND_SAMPLED,
      );
    }
    expect(kept.length).toBeGreaterThan(50);
    expect(kept.length).toBeLessThan(150);
    expect(processSpans()).toHaveLength(1 + kept.length);
    // resume() without a ratio keeps the current one.
    tracing.pause();
    tracing.resume();
    expect(tracing.state.sampleRatio).toBe(0.5);
  });

  it("carries the producer's tracestate to the span and to the result", () => {
    const exporter = new InMemorySpanExporter();
    const tracing = tracingInto(exporter);
    const record = request(0, [1], `00-${TRACE_ID}-${PRODUCER_SPAN}-01`);
    record.headers['tracestate'] = Buffer.from('vendor=abc,other=1');
    const [out] = answer(tracing, [record]);
    expect(String(out!.headers['tracestate'])).toBe('vendor=abc,other=1');
    const span = exporter.getFinishedSpans().find((s) => s.name === 'process requests')!;
    expect(span.spanContext().traceState?.serialize()).toBe('vendor=abc,other=1');
    expect(span.parentSpanContext?.isRemote).toBe(true);
  });

  it('starts a new trace for an unreadable traceparent instead of failing the request', () => {
    const exporter = new InMemorySpanExporter();
    const tracing = tracingInto(exporter);
    const [out] = answer(tracing, [request(0, [1], 'not-a-traceparent')]);
    expect(String(out!.headers['traceparent'])).toMatch(/^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/);
    const span = exporter.getFinishedSpans()[0]!;
    expect(span.parentSpanContext).toBeUndefined();
  });

  it('starts a new trace for an all-zero trace id or parent span id (invalid in W3C trace context)', () => {
    const exporter = new InMemorySpanExporter();
    const tracing = tracingInto(exporter);
    const outs = answer(tracing, [
      request(0, [1], `00-${'0'.repeat(32)}-${PRODUCER_SPAN}-01`),
      request(1, [1], `00-${TRACE_ID}-${'0'.repeat(16)}-01`),
    ]);
    for (const out of outs) {
      const [, traceId] = String(out.headers['traceparent']).split('-');
      expect(traceId).not.toBe('0'.repeat(32));
      expect(traceId).not.toBe(TRACE_ID);
    }
    expect(exporter.getFinishedSpans().filter((s) => s.parentSpanContext)).toEqual([]);
  });

  it('leaves a request given up during inference out of the batch span, and its reused slot untouched', () => {
    const exporter = new InMemorySpanExporter();
    const tracing = tracingInto(exporter, 1, 2);
    const [kept, lost, next] = [0, 1, 2].map((i) => request(i, [1]));
    tracing.received(kept!);
    tracing.received(lost!);
    const inferred = tracing.batch(
      [kept!, lost!],
      { name: 'm', version: '1', backend: 'cpu' },
      0,
      [0, 0],
    );
    tracing.abandoned(lost!, 'partition revoked');
    // The next request read takes the slot the lost one let go.
    tracing.received(next!);
    inferred(1);
    tracing.sending([kept!, next!], [null, null], 'results');
    tracing.answered(kept!, 'result');
    tracing.answered(next!, 'result');
    expect(tracing.inFlight).toBe(0);
    const spans = exporter.getFinishedSpans();
    const byOffset = (offset: number) =>
      spans.find((s) => s.attributes['messaging.kafka.offset'] === offset)!;
    const batch = spans.find((s) => s.name === 'infer m')!;
    expect(batch.links.map((l) => l.context.spanId)).toEqual([byOffset(0).spanContext().spanId]);
    expect(byOffset(0).attributes[SPAN_ATTRIBUTE.batchSpanId]).toBe(batch.spanContext().spanId);
    expect(byOffset(2).attributes[SPAN_ATTRIBUTE.batchSpanId]).toBeUndefined();
    expect(byOffset(1).attributes[SPAN_ATTRIBUTE.outcome]).toBe('abandoned');
  });

  it("gives each result its request's traceparent while slots are reused, and leaves a given-up result's alone", () => {
    const exporter = new InMemorySpanExporter();
    // One slot: every request below takes the slot the one before it let go.
    const tracing = tracingInto(exporter, 1, 1);
    const out = () => ({
      topic: 'results',
      key: null,
      value: Buffer.alloc(0),
      headers: {} as Record<string, string | Buffer>,
    });
    const sent: string[] = [];
    for (let i = 0; i < 3; i++) {
      const record = request(i, [1]);
      const result = out();
      tracing.received(record);
      tracing.sending([record], [result], 'results');
      // What the broker keeps: the bytes as they were when acknowledged.
      sent.push(String(result.headers['traceparent']));
      tracing.answered(record, 'result');
    }
    const spanIds = exporter
      .getFinishedSpans()
      .filter((s) => s.kind === SpanKind.CONSUMER)
      .map((s) => `00-${s.spanContext().traceId}-${s.spanContext().spanId}-01`);
    expect(sent).toEqual(spanIds);
    expect(new Set(sent).size).toBe(3);

    // A request given up while its result may still be on its way (a transaction being
    // dropped): the next request takes its slot, and the result keeps its own header.
    const lost = request(3, [1]);
    const lostResult = out();
    tracing.received(lost);
    tracing.sending([lost], [lostResult], 'results');
    const lostHeader = String(lostResult.headers['traceparent']);
    tracing.abandoned(lost, 'partition revoked');
    const next = request(4, [1]);
    const nextResult = out();
    tracing.received(next);
    tracing.sending([next], [nextResult], 'results');
    expect(String(lostResult.headers['traceparent'])).toBe(lostHeader);
    expect(String(nextResult.headers['traceparent'])).not.toBe(lostHeader);
  });

  it('ends each send span with the last of its requests, also for a request sent again before its answer', () => {
    const exporter = new InMemorySpanExporter();
    const tracing = tracingInto(exporter);
    const [a, b, c] = [0, 1, 2].map((i) => request(i, [1]));
    const out = () => ({ topic: 'results', key: null, value: Buffer.alloc(0), headers: {} });
    for (const r of [a!, b!, c!]) tracing.received(r);
    tracing.sending([a!, b!], [out(), out()], 'results');
    // b goes out again before anything was acknowledged: the first send stops waiting for it.
    tracing.sending([b!, c!], [out(), out()], 'results');
    const sends = () => exporter.getFinishedSpans().filter((s) => s.kind === SpanKind.PRODUCER);
    expect(sends()).toEqual([]);
    tracing.answered(a!, 'result');
    expect(sends().map((s) => s.attributes['messaging.batch.message_count'])).toEqual([2]);
    tracing.answered(b!, 'result');
    expect(sends()).toHaveLength(1);
    tracing.answered(c!, 'result');
    expect(sends().map((s) => s.attributes['messaging.batch.message_count'])).toEqual([2, 2]);
    const spanOf = (offset: number) =>
      exporter
        .getFinishedSpans()
        .find((s) => s.attributes['messaging.kafka.offset'] === offset)!
        .spanContext().spanId;
    expect(
      sends()[1]!
        .links.map((l) => l.context.spanId)
        .sort(),
    ).toEqual([spanOf(1), spanOf(2)].sort());
    // A later send takes a freed place and ends on its own.
    const d = request(3, [1]);
    tracing.received(d);
    tracing.sending([d], [out()], 'results');
    tracing.answered(d, 'result');
    expect(sends()).toHaveLength(3);
    expect(tracing.inFlight).toBe(0);
  });

  it('times the spans of records read together and answered together with one reading each', () => {
    const exporter = new InMemorySpanExporter();
    const tracing = tracingInto(exporter);
    const records = [0, 1].map((i) => request(i, [1]));
    const produced = Date.now() - 60_000;
    for (const r of records) r.timestamp = produced;
    // The fetch came in 250 ms after the records were produced.
    const readAt = { epoch: 1_700_000_000_000.5, wall: produced + 250 };
    for (const r of records) tracing.received(r, readAt);
    const out = () => ({ topic: 'results', key: null, value: Buffer.alloc(0), headers: {} });
    tracing.sending(records, [out(), out()], 'results');
    const ackedAt = readAt.epoch + 42.25;
    for (const r of records) tracing.answered(r, 'result', '', ackedAt);
    const spans = exporter.getFinishedSpans();
    const processSpans = spans.filter((s) => s.kind === SpanKind.CONSUMER);
    expect(processSpans).toHaveLength(2);
    for (const span of processSpans) {
      expect(hrTimeToMilliseconds(span.startTime)).toBeCloseTo(readAt.epoch, 3);
      expect(hrTimeToMilliseconds(span.endTime)).toBeCloseTo(ackedAt, 3);
      expect(span.attributes[SPAN_ATTRIBUTE.queueWaitMs]).toBe(250);
    }
    const send = spans.find((s) => s.kind === SpanKind.PRODUCER)!;
    expect(hrTimeToMilliseconds(send.endTime)).toBeCloseTo(ackedAt, 3);
  });

  it('ends an abandoned request span with the reason as an event', () => {
    const exporter = new InMemorySpanExporter();
    const tracing = tracingInto(exporter);
    const record = request(7, [1]);
    tracing.received(record);
    tracing.abandoned(record, 'partition revoked');
    const [span] = exporter.getFinishedSpans();
    expect(span!.attributes[SPAN_ATTRIBUTE.outcome]).toBe('abandoned');
    expect(span!.events.map((e) => [e.name, e.attributes?.['reason']])).toEqual([
      ['abandoned', 'partition revoked'],
    ]);
    // Never read by a batch: no batch attributes.
    expect(span!.attributes[SPAN_ATTRIBUTE.batchSpanId]).toBeUndefined();
  });
});
