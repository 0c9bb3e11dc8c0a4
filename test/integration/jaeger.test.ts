/**
 * The receiver round trip without streamscore: spans exported by the OpenTelemetry SDK over
 * OTLP/HTTP to a real Jaeger v2 (src/telemetry/local-jaeger.ts) come back from its query API with
 * their trace id, parent, links, attributes, events and status. The worker's tracing tests use the
 * same pieces: startLocalJaeger() → exporter url `${otlpHttpEndpoint}/v1/traces` → getTrace().
 */
import { randomBytes } from 'node:crypto';
import {
  ROOT_CONTEXT,
  SpanKind,
  SpanStatusCode,
  defaultTextMapGetter,
  trace,
  type SpanContext,
} from '@opentelemetry/api';
import { W3CTraceContextPropagator } from '@opentelemetry/core';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { BasicTracerProvider, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  findTraces,
  getServices,
  getTrace,
  spanTree,
  startLocalJaeger,
  type LocalJaeger,
} from '../../src/telemetry/local-jaeger.js';

const log = (msg: string): void => console.error(`[jaeger] ${msg}`);
const hex = (bytes: number): string => randomBytes(bytes).toString('hex');

describe('local Jaeger v2: OTLP/HTTP in, query API out', () => {
  let jaeger: LocalJaeger;
  let provider: BasicTracerProvider;
  const service = `jaeger-roundtrip-${hex(4)}`;

  beforeAll(async () => {
    // A cold build takes minutes (CI builds it before the tests with `npm run jaeger -- fetch`).
    jaeger = await startLocalJaeger({ log });
    provider = new BasicTracerProvider({
      resource: resourceFromAttributes({ 'service.name': service }),
      spanProcessors: [
        new SimpleSpanProcessor(
          new OTLPTraceExporter({ url: `${jaeger.otlpHttpEndpoint}/v1/traces` }),
        ),
      ],
    });
  }, 30 * 60_000);

  afterAll(async () => {
    await provider?.shutdown();
    await jaeger?.stop();
  });

  it('stores a span with its remote parent, link, attributes, event and status', async () => {
    // The request's producer: a traceparent header as it would arrive on a Kafka record.
    const traceId = hex(16);
    const producerSpanId = hex(8);
    const parent = new W3CTraceContextPropagator().extract(
      ROOT_CONTEXT,
      { traceparent: `00-${traceId}-${producerSpanId}-01` },
      defaultTextMapGetter,
    );
    // Another request's span, linked as a batch links the requests it answers.
    const linked: SpanContext = { traceId: hex(16), spanId: hex(8), traceFlags: 1, isRemote: true };

    const tracer = provider.getTracer('streamscore-test', '1.2.3');
    const span = tracer.startSpan(
      'process requests',
      {
        kind: SpanKind.CONSUMER,
        attributes: {
          'messaging.system': 'kafka',
          'messaging.kafka.offset': 42,
          'streamscore.batch.size': 3,
          'streamscore.sampled': true,
          'streamscore.latency.ms': 1.5,
          'streamscore.inputs': ['pixels', 'mask'],
        },
        links: [{ context: linked, attributes: { 'messaging.kafka.partition': 2 } }],
      },
      parent,
    );
    const child = tracer.startSpan(
      'infer',
      { kind: SpanKind.INTERNAL },
      trace.setSpan(ROOT_CONTEXT, span),
    );
    child.setStatus({ code: SpanStatusCode.ERROR, message: 'replica crashed' });
    child.end();
    span.addEvent('batch formed', { 'batch.size': 3 });
    span.setStatus({ code: SpanStatusCode.OK });
    span.end();
    await provider.forceFlush();

    const got = await getTrace(jaeger.queryUrl, traceId, { minSpans: 2, timeoutMs: 10_000 });
    expect(got?.traceId).toBe(traceId);
    expect(got?.spans).toHaveLength(2);
    const { roots, children } = spanTree(got!);
    // The producer's span was never exported here, so the consumer span is this trace's root.
    expect(roots.map((s) => s.name)).toEqual(['process requests']);
    const root = roots[0]!;
    expect(root).toMatchObject({
      traceId,
      spanId: span.spanContext().spanId,
      parentSpanId: producerSpanId,
      name: 'process requests',
      kind: 'CONSUMER',
      serviceName: service,
      scope: { name: 'streamscore-test', version: '1.2.3' },
      status: { code: 'OK', message: '' },
      links: [
        {
          traceId: linked.traceId,
          spanId: linked.spanId,
          attributes: { 'messaging.kafka.partition': 2 },
        },
      ],
      events: [{ name: 'batch formed', attributes: { 'batch.size': 3 } }],
    });
    // Exactly what the SDK exported: getTrace() asks for raw traces, which Jaeger leaves unadjusted.
    expect(root.attributes).toEqual({
      'messaging.system': 'kafka',
      'messaging.kafka.offset': 42,
      'streamscore.batch.size': 3,
      'streamscore.sampled': true,
      'streamscore.latency.ms': 1.5,
      'streamscore.inputs': ['pixels', 'mask'],
    });
    expect(root.durationMs).toBeGreaterThanOrEqual(0);
    expect(root.startMs).toBeGreaterThan(Date.now() - 60_000);

    expect(children(root)).toMatchObject([
      {
        name: 'infer',
        parentSpanId: root.spanId,
        kind: 'INTERNAL',
        status: { code: 'ERROR', message: 'replica crashed' },
        links: [],
      },
    ]);

    // The same trace by service, and the service in the list.
    const byService = await findTraces(jaeger.queryUrl, service, {
      minSpans: 2,
      timeoutMs: 10_000,
    });
    expect(byService.map((t) => t.traceId)).toEqual([traceId]);
    expect(await getServices(jaeger.queryUrl)).toContain(service);
    const byOperation = await findTraces(jaeger.queryUrl, service, { operation: 'infer' });
    expect(byOperation.map((t) => t.traceId)).toEqual([traceId]);
  });

  it('answers undefined / [] for traces it does not have', async () => {
    expect(await getTrace(jaeger.queryUrl, hex(16))).toBeUndefined();
    expect(await findTraces(jaeger.queryUrl, `no-such-service-${hex(4)}`)).toEqual([]);
  });
});
