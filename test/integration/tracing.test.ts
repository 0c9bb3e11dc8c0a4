/**
 * Traces end to end, on real services: a producer exports its `send` spans to Jaeger v2 and puts
 * their traceparent on Avro requests in the real broker; the worker (startService, tracing on)
 * exports its spans to the same Jaeger over OTLP/HTTP; the test reads results like a downstream
 * consumer and asks Jaeger's query API what it received.
 */
import {
  defaultTextMapSetter,
  propagation,
  ROOT_CONTEXT,
  SpanKind,
  trace,
} from '@opentelemetry/api';
import { W3CTraceContextPropagator } from '@opentelemetry/core';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { BasicTracerProvider, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base';
import { randomBytes } from 'node:crypto';
import { Partitioners } from 'kafkajs';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { AvroCodec } from '../../src/codec/avro.js';
import { loadConfig } from '../../src/config/index.js';
import { loadDigitsDataset } from '../../src/model/digits-data.js';
import { startService } from '../../src/service.js';
import {
  findTraces,
  getTrace,
  startLocalJaeger,
  type LocalJaeger,
  type TraceSpan,
} from '../../src/telemetry/local-jaeger.js';
import { silentLogger } from '../../src/telemetry/logger.js';
import { createWorkerTopics, readAll, testKafka, uniqueTopic } from './helpers/kafka.js';

const brokers = inject('kafkaBrokers');
const codec = new AvroCodec();
const REQUESTS = 12;

/** A request for the digits model, as a producer encodes it. */
function digitsRequest(id: string, pixels: Float32Array): Buffer {
  return codec.encodeRequest({
    id,
    model: null,
    modelVersion: null,
    requestedAt: Date.now(),
    inputs: [{ name: 'pixels', shape: [64], data: pixels }],
  });
}

/**
 * A worker (startService) on fresh topics of `prefix`, exporting its spans to `otlpEndpoint` as
 * `serviceName`; `http`: its HTTP server on any free port of 127.0.0.1.
 */
async function startTracedWorker(
  prefix: string,
  otlpEndpoint: string,
  serviceName: string,
  options: { partitions: number; http: boolean },
) {
  const topics = await createWorkerTopics(brokers, prefix, options.partitions);
  const service = await startService(
    loadConfig({
      env: {},
      overrides: {
        kafka: { brokers, groupId: uniqueTopic(`${prefix}-group`) },
        topics: {
          requests: [topics.requests],
          results: topics.results,
          deadLetter: topics.deadLetter,
        },
        model: { name: 'digits', version: '1' },
        telemetry: { otlpEndpoint, serviceName },
        http: options.http ? { enabled: true, host: '127.0.0.1', port: 0 } : { enabled: false },
        log: { level: 'silent' },
      },
    }),
    { log: silentLogger },
  );
  return { topics, service };
}

describe('traces through the real broker into Jaeger', () => {
  let jaeger: LocalJaeger;
  beforeAll(async () => {
    jaeger = await startLocalJaeger();
  });
  afterAll(async () => {
    await jaeger?.stop();
    propagation.disable();
    trace.disable();
  });

  it('puts the request span in the producer trace, links the batch span to each request and continues the trace in the result', async () => {
    const workerService = uniqueTopic('streamscore-worker');
    const { topics, service } = await startTracedWorker(
      'trace',
      jaeger.otlpHttpEndpoint,
      workerService,
      { partitions: 2, http: false },
    );

    // The upstream service: a producer span per request, exported to the same Jaeger.
    const upstream = new BasicTracerProvider({
      resource: resourceFromAttributes({ 'service.name': `${workerService}-upstream` }),
      spanProcessors: [
        new SimpleSpanProcessor(
          new OTLPTraceExporter({ url: `${jaeger.otlpHttpEndpoint}/v1/traces` }),
        ),
      ],
    });
    const tracer = upstream.getTracer('upstream');
    const w3c = new W3CTraceContextPropagator();
    const { heldOut } = loadDigitsDataset();
    const sent: { id: string; traceId: string; producerSpanId: string }[] = [];
    const messages = Array.from({ length: REQUESTS }, (_, i) => {
      const id = `t-${i}`;
      const span = tracer.startSpan(`send ${topics.requests}`, { kind: SpanKind.PRODUCER });
      const headers: Record<string, string> = {};
      w3c.inject(trace.setSpan(ROOT_CONTEXT, span), headers, defaultTextMapSetter);
      span.end();
      const { traceId, spanId } = span.spanContext();
      sent.push({ id, traceId, producerSpanId: spanId });
      return {
        key: id,
        headers,
        value: digitsRequest(id, heldOut[i]!.pixels),
      };
    });
    await upstream.forceFlush();
    const producer = testKafka(brokers).producer({
      createPartitioner: Partitioners.DefaultPartitioner,
    });
    await producer.connect();
    await producer.send({ topic: topics.requests, messages });
    await producer.disconnect();

    const results = await readAll(brokers, topics.results, {
      expected: REQUESTS,
      timeoutMs: 60_000,
    });
    await service.stop(); // flushes the worker's spans
    await upstream.shutdown();
    expect(results).toHaveLength(REQUESTS);

    const batchTraces = await findTraces(jaeger.queryUrl, workerService, {
      operation: 'infer digits',
      minSpans: 1,
      timeoutMs: 20_000,
    });
    const batchSpans = batchTraces.flatMap((t) => t.spans).filter((s) => s.name === 'infer digits');
    const linkedTo = new Set(batchSpans.flatMap((s) => s.links.map((l) => l.spanId)));
    expect(batchSpans.reduce((n, s) => n + Number(s.attributes['streamscore.batch.size']), 0)).toBe(
      REQUESTS,
    );

    const sendTraces = await findTraces(jaeger.queryUrl, workerService, {
      operation: `send ${topics.results}`,
      minSpans: 1,
      timeoutMs: 20_000,
    });
    const sendSpans = sendTraces
      .flatMap((t) => t.spans)
      .filter((s) => s.name === `send ${topics.results}`);
    for (const span of sendSpans) expect(span.kind).toBe('PRODUCER');
    const sentFrom = new Set(sendSpans.flatMap((s) => s.links.map((l) => l.spanId)));
    expect(
      sendSpans.reduce((n, s) => n + Number(s.attributes['messaging.batch.message_count']), 0),
    ).toBe(REQUESTS);

    for (const { id, traceId, producerSpanId } of sent) {
      const found = await getTrace(jaeger.queryUrl, traceId, { minSpans: 2, timeoutMs: 20_000 });
      expect(found, `trace of ${id}`).toBeDefined();
      const spans = found!.spans;
      const byName = (name: string): TraceSpan[] => spans.filter((s) => s.name === name);
      // The request span is in the producer's trace, as the child of the producer's span.
      const [processSpan] = byName(`process ${topics.requests}`);
      expect(processSpan, `process span of ${id}`).toBeDefined();
      expect(processSpan!.parentSpanId).toBe(producerSpanId);
      expect(processSpan!.kind).toBe('CONSUMER');
      expect(processSpan!.serviceName).toBe(workerService);
      expect(processSpan!.attributes).toMatchObject({
        'messaging.system': 'kafka',
        'messaging.message.id': id,
        'streamscore.outcome': 'result',
      });
      for (const key of [
        'streamscore.queue_wait_ms',
        'streamscore.batch_wait_ms',
        'streamscore.inference_ms',
      ])
        expect(typeof processSpan!.attributes[key], key).toBe('number');
      // The batch span links to each request span; the request span names it.
      const batchSpan = batchSpans.find(
        (b) => b.spanId === processSpan!.attributes['streamscore.batch.span_id'],
      );
      expect(batchSpan?.attributes).toMatchObject({
        'streamscore.model.name': 'digits',
        'streamscore.model.version': '1',
      });
      expect(linkedTo.has(processSpan!.spanId), `batch link to ${id}`).toBe(true);
      // A send span (one per batch of answers) links to the request; the result continues the
      // producer's trace from the request's span.
      expect(sentFrom.has(processSpan!.spanId), `send link to ${id}`).toBe(true);
      const result = results.find((m) => m.key?.toString() === id)!;
      expect(result.headers?.['traceparent']?.toString()).toBe(
        `00-${traceId}-${processSpan!.spanId}-01`,
      );
    }
  });

  it('pauses and resumes tracing at run time over HTTP: requests read while paused get no spans and no traceparent, later ones are traced again', async () => {
    const { topics, service } = await startTracedWorker(
      'switch',
      jaeger.otlpHttpEndpoint,
      uniqueTopic('streamscore-switched'),
      { partitions: 1, http: true },
    );
    const url = service.http!.url;
    const post = async (path: string) => {
      const response = await fetch(`${url}${path}`, { method: 'POST' });
      return { status: response.status, body: (await response.json()) as Record<string, unknown> };
    };
    const ratioGauge = async () => {
      const text = await (await fetch(`${url}/metrics`)).text();
      const line = text.split('\n').find((l) => l.startsWith('streamscore_tracing_sample_ratio'));
      return Number(line?.split(' ').at(-1));
    };
    const { heldOut } = loadDigitsDataset();
    const producer = testKafka(brokers).producer({
      createPartitioner: Partitioners.DefaultPartitioner,
    });
    await producer.connect();
    /** Requests whose producer sampled them (a traceparent with flags 01), each its own trace. */
    const send = async (prefix: string) => {
      const sent = Array.from({ length: 6 }, (_, i) => ({
        id: `${prefix}-${i}`,
        traceId: randomBytes(16).toString('hex'),
      }));
      await producer.send({
        topic: topics.requests,
        messages: sent.map(({ id, traceId }, i) => ({
          key: id,
          headers: { traceparent: `00-${traceId}-${randomBytes(8).toString('hex')}-01` },
          value: digitsRequest(id, heldOut[i]!.pixels),
        })),
      });
      return sent;
    };
    let paused: { id: string; traceId: string }[] = [];
    let resumed: { id: string; traceId: string }[] = [];
    try {
      expect(await (await fetch(`${url}/tracing`)).json()).toMatchObject({
        configured: true,
        on: true,
        sampleRatio: 1,
      });
      expect(await ratioGauge()).toBe(1);
      expect(await post('/tracing/pause')).toMatchObject({ status: 200, body: { on: false } });
      expect(await ratioGauge()).toBe(0);
      paused = await send('paused');
      const pausedResults = await readAll(brokers, topics.results, {
        expected: paused.length,
        timeoutMs: 60_000,
      });
      expect(pausedResults).toHaveLength(paused.length);
      // As with tracing off: the result does not continue a trace the worker did not record.
      for (const result of pausedResults) expect(result.headers?.['traceparent']).toBeUndefined();

      const refused = await post('/tracing/resume?sampleRatio=2');
      expect(refused.status).toBe(400);
      expect(String(refused.body['error'])).toContain('sampleRatio');
      expect(await post('/tracing/resume?sampleRatio=0.5')).toMatchObject({
        status: 200,
        body: { on: true, sampleRatio: 0.5 },
      });
      expect(await ratioGauge()).toBe(0.5);
      resumed = await send('resumed');
      const all = await readAll(brokers, topics.results, {
        expected: paused.length + resumed.length,
        timeoutMs: 60_000,
      });
      for (const { id, traceId } of resumed) {
        const result = all.find((m) => m.key?.toString() === id);
        // Sampled by the producer: traced whatever the ratio of new traces.
        expect(result?.headers?.['traceparent']?.toString()).toMatch(
          new RegExp(`^00-${traceId}-[0-9a-f]{16}-01$`),
        );
      }
    } finally {
      await producer.disconnect();
      await service.stop(); // flushes the worker's spans
    }
    // The resumed requests' spans reached Jaeger; those read while paused have none, though their
    // producers sampled them (spans leave in order: had any been made, they would be there too).
    const processName = `process ${topics.requests}`;
    for (const { traceId } of resumed) {
      const found = await getTrace(jaeger.queryUrl, traceId, { minSpans: 1, timeoutMs: 20_000 });
      expect(found?.spans.map((s) => s.name)).toContain(processName);
    }
    for (const { id, traceId } of paused) {
      const found = await getTrace(jaeger.queryUrl, traceId, { minSpans: 1, timeoutMs: 500 });
      expect(found, `spans of ${id}`).toBeUndefined();
    }
  });
});
