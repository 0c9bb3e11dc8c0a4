import { createServer, type IncomingMessage } from 'node:http';
import type { AddressInfo } from 'node:net';
import { SpanKind, SpanStatusCode } from '@opentelemetry/api';
import { ExportResultCode, hrTimeDuration } from '@opentelemetry/core';
import { ProtobufTraceSerializer } from '@opentelemetry/otlp-transformer';
import { emptyResource } from '@opentelemetry/resources';
import type { ReadableSpan, SpanProcessor } from '@opentelemetry/sdk-trace';
import { BasicTracerProvider } from '@opentelemetry/sdk-trace-base';
import { afterAll, describe, expect, it } from 'vitest';
import { startBodyReceiver } from '../helpers/http-receiver.js';
import { hexId as hex, requestSpanRecord } from '../helpers/span-records.js';
import { TraceExporter } from '../../src/telemetry/otlp/trace-exporter.js';
import { TraceSerializer } from '../../src/telemetry/otlp/trace-serializer.js';
import { telemetryResource } from '../../src/telemetry/resource.js';
import { GroupSpan, SpanBuilder } from '../../src/telemetry/span-builder.js';
import {
  SpanRecordWriter,
  type GroupSpanRecord,
  type RequestSpanRecord,
} from '../../src/telemetry/span-records.js';
import { idWords } from '../../src/telemetry/trace-ids.js';

/** Keeps what the builder ends, as a span processor would get it. */
class Collect implements SpanProcessor {
  readonly spans: ReadableSpan[] = [];
  onStart(): void {}
  onEnd(span: ReadableSpan): void {
    this.spans.push(span);
  }
  async forceFlush(): Promise<void> {}
  async shutdown(): Promise<void> {}
}

const request = requestSpanRecord;

const group = (kind: 'infer' | 'send', links: number, overrides: Partial<GroupSpanRecord> = {}) =>
  ({
    kind,
    name: kind === 'infer' ? 'infer digits' : 'send requests.results',
    ids: idWords('e'.repeat(32) + 'f'.repeat(16)),
    start: 1_795_000_000_001.5,
    end: 1_795_000_000_003.25,
    attributes:
      kind === 'infer'
        ? {
            'streamscore.model.name': 'digits',
            'streamscore.model.version': '3',
            'streamscore.model.backend': 'wasm',
            'streamscore.batch.size': links,
          }
        : {
            'messaging.system': 'kafka',
            'messaging.operation.type': 'send',
            'messaging.batch.message_count': links,
            'messaging.destination.name': 'requests.results',
          },
    links: idWords(
      Array.from({ length: links }, (_, i) => hex(i, 32, 'a') + hex(i, 16, 'b')).join(''),
    ),
    error: '',
    ...overrides,
  }) satisfies GroupSpanRecord;

/** The spans the worker's builder makes from these records, with the worker's resource. */
function build(requests: RequestSpanRecord[], groups: GroupSpanRecord[] = []): ReadableSpan[] {
  const collect = new Collect();
  const builder = new SpanBuilder({
    spanProcessors: [collect],
    resource: telemetryResource('streamscore-test', '1.2.3'),
    groupId: 'scorers',
  });
  const writer = new SpanRecordWriter(Math.max(1, requests.length));
  for (const r of requests) writer.add(r);
  for (const g of groups) writer.addGroup(g);
  builder.build(writer.take());
  return collect.spans;
}

/** Ours and the SDK's, on the same spans; ours must not have handed them to the SDK's. */
function bothWays(spans: ReadableSpan[]): { ours: Uint8Array; sdk: Uint8Array } {
  const serializer = new TraceSerializer();
  const ours = serializer.serializeRequest(spans)!;
  expect(serializer.counts).toEqual({ encoded: spans.length, delegated: 0 });
  return { ours, sdk: ProtobufTraceSerializer.serializeRequest(spans)! };
}

describe('TraceSerializer: the SDK’s OTLP/protobuf bytes, written from the records', () => {
  it('a batch as the worker makes it: requests with and without a producer parent, infer and send spans linked to each', () => {
    const requests = Array.from({ length: 128 }, (_, i) => request(i));
    const { ours, sdk } = bothWays(
      build(requests, [
        group('infer', 128),
        group('send', 128, { ids: idWords('e'.repeat(32) + '1'.repeat(16)) }),
      ]),
    );
    expect(ours.length).toBeGreaterThan(128 * 300);
    expect(Buffer.from(ours).equals(Buffer.from(sdk))).toBe(true);
  });

  it('every optional part: tracestate, dead letters, abandoned events, model errors, odd numbers and text', () => {
    const requests = [
      request(1, { traceState: 'vendor=a,other=b' }),
      // The SDK's TraceState drops what is invalid and trims: the same serialisation either way.
      request(3, { traceState: ' ok=1 , bad key=2,x=3' }),
      request(4, { outcome: 'dead-letter', errorCode: 'WRONG_SHAPE', batchSpanId: '' }),
      request(5, {
        outcome: 'abandoned',
        abandonReason: 'shutdown before the model answered',
        batchSpanId: '',
        batchWaitMs: Number.NaN,
        inferenceMs: Number.NaN,
      }),
      request(6, { requestId: '' }),
      // A producer clock ahead of ours: a negative queue wait is an int64 varint of 10 bytes.
      request(7, { queueWaitMs: -3 }),
      request(8, { queueWaitMs: 1e-7, batchWaitMs: 123456.789, inferenceMs: 0 }),
      request(9, { offset: 2 ** 40 + 9, partition: 1023 }),
      request(10, { topic: 'zählung.anfragen', requestId: 'ид-10 ✓', errorCode: '' }),
      // Just under a whole second, and a whole second: the split into [seconds, nanos].
      request(11, { start: 1_795_000_000_999.75, end: 1_795_000_001_000 }),
      request(12, { topic: `t${'x'.repeat(300)}` }),
      // Long enough (≥ 64 bytes) to be copied from the middle of the text bytes in one call.
      request(13, { requestId: `order-${'0123456789'.repeat(9)}-é` }),
    ];
    const groups = [
      group('infer', 3, { error: 'model threw: shape [3,4] does not match [3,5]' }),
      group('send', 2, { name: 'send', attributes: { 'messaging.system': 'kafka' } }),
      group('infer', 0),
    ];
    const { ours, sdk } = bothWays(build(requests, groups));
    expect(Buffer.from(ours).equals(Buffer.from(sdk))).toBe(true);
  });

  it('export requests of any size: the outer lengths take 1 to 3 bytes', () => {
    for (const n of [1, 2, 40, 2048]) {
      const { ours, sdk } = bothWays(build(Array.from({ length: n }, (_, i) => request(i))));
      expect(Buffer.from(ours).equals(Buffer.from(sdk))).toBe(true);
    }
  });

  it('reads request spans as the SDK would, through ReadableSpan', () => {
    const [span] = build([
      request(1, { traceState: 'k=v', errorCode: 'X', outcome: 'dead-letter' }),
    ]);
    expect(span!.name).toBe('process requests');
    expect(span!.kind).toBe(SpanKind.CONSUMER);
    expect(span!.parentSpanContext).toMatchObject({ spanId: hex(1, 16, 'c'), isRemote: true });
    expect(span!.spanContext().traceState?.get('k')).toBe('v');
    expect(span!.duration).toEqual(hrTimeDuration(span!.startTime, span!.endTime));
    expect(span!.status).toEqual({ code: SpanStatusCode.ERROR, message: 'X' });
    expect(span!.attributes['messaging.kafka.offset']).toBe(1001);
  });

  it('leaves spans it does not know to the SDK’s serializer, whole', () => {
    const provider = new BasicTracerProvider({ spanProcessors: [] });
    const sdkSpan = provider
      .getTracer('elsewhere')
      .startSpan('other') as unknown as ReadableSpan & {
      end(): void;
    };
    sdkSpan.end();
    const listValued = new GroupSpan(
      { ...group('infer', 1), attributes: { shape: [1, 28, 28] } as never },
      emptyResource(),
    );
    for (const spans of [[...build([request(1)]), sdkSpan], [listValued]]) {
      const serializer = new TraceSerializer();
      const ours = serializer.serializeRequest(spans)!;
      expect(serializer.counts).toEqual({ encoded: 0, delegated: spans.length });
      expect(
        Buffer.from(ours).equals(Buffer.from(ProtobufTraceSerializer.serializeRequest(spans)!)),
      ).toBe(true);
    }
  });
});

describe('TraceExporter', () => {
  const bodies: { path: string; type: string; body: Buffer }[] = [];
  const server = createServer((req: IncomingMessage, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      bodies.push({
        path: req.url ?? '',
        type: req.headers['content-type'] ?? '',
        body: Buffer.concat(chunks),
      });
      res.writeHead(200, { 'content-type': 'application/x-protobuf' }).end();
    });
  });
  afterAll(() => new Promise<void>((done) => server.close(() => done())));

  it('posts the serializer’s bytes over OTLP/HTTP as the SDK’s exporter would', async () => {
    await new Promise<void>((done) => server.listen(0, '127.0.0.1', done));
    const { port } = server.address() as AddressInfo;
    const exporter = new TraceExporter({ url: `http://127.0.0.1:${port}/v1/traces` });
    const spans = build(
      Array.from({ length: 5 }, (_, i) => request(i)),
      [group('infer', 5)],
    );
    const result = await new Promise<{ code: ExportResultCode }>((done) =>
      exporter.export(spans, done),
    );
    await exporter.shutdown();
    expect(result.code).toBe(ExportResultCode.SUCCESS);
    expect(bodies).toHaveLength(1);
    expect(bodies[0]!.path).toBe('/v1/traces');
    expect(bodies[0]!.type).toBe('application/x-protobuf');
    expect(
      bodies[0]!.body.equals(Buffer.from(ProtobufTraceSerializer.serializeRequest(spans)!)),
    ).toBe(true);
  });

  it('never writes an export over one still being sent or retried, and reuses a body once its export ended', async () => {
    // The first post is refused with 503, so the exporter retries its body (~1 s later) while
    // two more exports are written and sent.
    const flaky = await startBodyReceiver((n) => (n === 1 ? 503 : 200));
    const received = flaky.bodies;
    const written: Uint8Array[] = [];
    class Recording extends TraceSerializer {
      override serializeRequest(spans: ReadableSpan[]): Uint8Array | undefined {
        const body = super.serializeRequest(spans)!;
        written.push(body);
        return body;
      }
    }
    const exporter = new TraceExporter({ url: `${flaky.url}/v1/traces` }, new Recording());
    const exportOf = (spans: ReadableSpan[]) =>
      new Promise<{ code: ExportResultCode }>((done) => exporter.export(spans, done));
    const sdk = (spans: ReadableSpan[]) =>
      Buffer.from(ProtobufTraceSerializer.serializeRequest(spans)!);
    const batches = [0, 100, 200].map((from) =>
      build(Array.from({ length: 50 }, (_, i) => request(from + i))),
    );
    const single = build([request(7)]);
    try {
      const results = await Promise.all(batches.map(exportOf));
      expect(results.map((r) => r.code)).toEqual(batches.map(() => ExportResultCode.SUCCESS));
      // Each export's bytes arrived, and the refused one's again when retried (not bytes of an
      // export written meanwhile).
      const which = received.map((body) => batches.findIndex((spans) => body.equals(sdk(spans))));
      expect(which).toHaveLength(4);
      expect(which).not.toContain(-1);
      expect(new Set(which).size).toBe(3);
      expect(which.filter((i) => i === which[0])).toHaveLength(2);
      // Exports one after another then take turns in the bodies already made.
      for (let i = 0; i < 4; i++) {
        expect((await exportOf(single)).code).toBe(ExportResultCode.SUCCESS);
        expect(received[4 + i]!.equals(sdk(single))).toBe(true);
      }
      expect(new Set(written.map((body) => body.buffer)).size).toBe(4);
    } finally {
      await exporter.shutdown();
      await flaky.close();
    }
  });
});
