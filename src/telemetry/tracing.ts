import {
  propagation,
  ROOT_CONTEXT,
  SpanKind,
  SpanStatusCode,
  trace,
  TraceFlags,
  type Attributes,
  type Context,
  type Link,
  type MeterProvider,
  type Span,
  type TextMapGetter,
  type TextMapSetter,
  type Tracer,
} from '@opentelemetry/api';
// OTLP/protobuf: about a quarter cheaper to serialise than OTLP/JSON and less than half the bytes.
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-proto';
// sdk-trace's own processor takes a meter provider for its self-observability metrics.
import { BatchSpanProcessor } from '@opentelemetry/sdk-trace';
import {
  NodeTracerProvider,
  ParentBasedSampler,
  SamplingDecision,
  TraceIdRatioBasedSampler,
  type Sampler,
  type SamplingResult,
} from '@opentelemetry/sdk-trace-node';
import type { StreamscoreConfig } from '../config/schema.js';
import type { InboundRecord, OutboundRecord, RecordHeaders } from '../kafka/types.js';
import type { Logger } from './logger.js';
import { telemetryResource } from './metrics-sdk.js';

export interface TracingHandle {
  tracer: Tracer;
  /** Exports what is buffered and stops. */
  shutdown(): Promise<void>;
}

/**
 * Starts the OpenTelemetry trace SDK when an OTLP endpoint is configured; null otherwise, and then
 * the worker makes no spans at all (no tracer, not even no-op ones on the hot path).
 */
export function startTracing(
  config: StreamscoreConfig['telemetry'],
  log: Logger,
  version = '0',
  meterProvider?: MeterProvider,
): TracingHandle | null {
  if (config.otlpEndpoint === null || config.tracesSampleRatio === 0) return null;
  const url = `${config.otlpEndpoint.replace(/\/$/, '')}/v1/traces`;
  const provider = new NodeTracerProvider({
    // The same resource as the metrics, so traces and metrics of one worker join up.
    resource: telemetryResource(config.serviceName, version),
    // A request whose producer sampled its trace is always recorded; new traces by ratio.
    sampler: new BatchFollowsRequests(
      new ParentBasedSampler({ root: new TraceIdRatioBasedSampler(config.tracesSampleRatio) }),
    ),
    spanProcessors: [
      new BatchSpanProcessor({
        exporter: new OTLPTraceExporter({ url }),
        maxQueueSize: config.traceQueueSize,
        maxExportBatchSize: Math.min(2048, config.traceQueueSize),
        scheduledDelayMillis: 1000,
        // Spans dropped on a full queue and the queue's size show up in /metrics.
        ...(meterProvider ? { selfObsMeterProvider: meterProvider } : {}),
      }),
    ],
  });
  // Sets the W3C trace-context propagator and the AsyncLocalStorage context manager too.
  provider.register();
  log.info({ url, sampleRatio: config.tracesSampleRatio }, 'tracing on: spans exported over OTLP');
  return {
    tracer: provider.getTracer('streamscore'),
    async shutdown() {
      await provider.shutdown().catch((err: unknown) => {
        log.warn({ err }, 'trace exporter did not flush cleanly');
      });
    },
  };
}

/**
 * Batch and send spans have no parent, only links to the requests they carry; they are recorded
 * when any of those requests is, so at 1 % every sampled request still finds its batch and send
 * spans (a ratio of their own would keep 1 % of those 1 %). Everything else: the inner sampler.
 */
export class BatchFollowsRequests implements Sampler {
  constructor(private readonly inner: Sampler) {}

  shouldSample(
    ctx: Context,
    traceId: string,
    name: string,
    kind: SpanKind,
    attributes: Attributes,
    links: Link[],
  ): SamplingResult {
    if (links.length === 0 || trace.getSpanContext(ctx) !== undefined) {
      return this.inner.shouldSample(ctx, traceId, name, kind, attributes, links);
    }
    const anySampled = links.some((l) => (l.context.traceFlags & TraceFlags.SAMPLED) !== 0);
    return {
      decision: anySampled ? SamplingDecision.RECORD_AND_SAMPLED : SamplingDecision.NOT_RECORD,
    };
  }

  toString(): string {
    return `BatchFollowsRequests{${this.inner.toString()}}`;
  }
}

const headerGetter: TextMapGetter<RecordHeaders> = {
  keys: (carrier) => Object.keys(carrier),
  get: (carrier, key) => carrier[key]?.toString('latin1'),
};

const headerSetter: TextMapSetter<OutboundRecord['headers']> = {
  set: (carrier, key, value) => {
    carrier[key] = value;
  },
};

/** Span and attribute names; README's "Traces" table lists the same. */
export const SPAN_ATTRIBUTE = {
  queueWaitMs: 'streamscore.queue_wait_ms',
  batchWaitMs: 'streamscore.batch_wait_ms',
  inferenceMs: 'streamscore.inference_ms',
  batchSize: 'streamscore.batch.size',
  batchSpanId: 'streamscore.batch.span_id',
  model: 'streamscore.model.name',
  modelVersion: 'streamscore.model.version',
  backend: 'streamscore.model.backend',
  outcome: 'streamscore.outcome',
  errorCode: 'streamscore.error.code',
} as const;

/** One `send` span for the answers handed to the broker together; it ends with the last of them. */
interface SendSpan {
  span: Span;
  open: number;
}

/**
 * The spans of one request's way through the worker, per the OpenTelemetry messaging
 * conventions: a consumer `process <topic>` span whose parent is the producer's context (the
 * record's traceparent), one `infer <model>` span per batch linked to every request in it, and one
 * producer `send <topic>` span per batch of answers handed to the broker, linked to each request.
 * A result's traceparent is its request's process span (the span the result was created in), so
 * consumers of results continue the producer's trace. At 100 % sampling every span per request
 * is paid tens of thousands of times a second, so there is one per request, not three.
 */
export class RequestTracing {
  private readonly spans = new WeakMap<InboundRecord, Span>();
  private readonly sends = new WeakMap<InboundRecord, SendSpan>();

  constructor(
    private readonly tracer: Tracer,
    private readonly groupId: string,
  ) {}

  /** The request was read: its process span starts, as a child of the producer's span. */
  received(record: InboundRecord): void {
    const parent = propagation.extract(ROOT_CONTEXT, record.headers, headerGetter);
    const span = this.tracer.startSpan(
      `process ${record.topic}`,
      { kind: SpanKind.CONSUMER },
      parent,
    );
    // An unsampled request keeps its span context (results carry it on) and costs nothing more.
    if (span.isRecording()) {
      span.setAttributes({
        'messaging.system': 'kafka',
        'messaging.operation.type': 'process',
        'messaging.destination.name': record.topic,
        'messaging.destination.partition.id': String(record.partition),
        'messaging.kafka.offset': Number(record.offset),
        'messaging.consumer.group.name': this.groupId,
        [SPAN_ATTRIBUTE.queueWaitMs]: Math.max(0, Date.now() - record.timestamp),
      });
    }
    this.spans.set(record, span);
  }

  /** The record's span context, for log lines about it. */
  logFields(record: InboundRecord): { trace_id: string; span_id: string } | Record<string, never> {
    const span = this.spans.get(record);
    if (!span) return {};
    const { traceId, spanId } = span.spanContext();
    return { trace_id: traceId, span_id: spanId };
  }

  /** The request id is known once decoded. */
  identified(record: InboundRecord, requestId: string): void {
    this.spans.get(record)?.setAttribute('messaging.message.id', requestId);
  }

  /** One model call for these requests: a batch span linked to each request's span. */
  batch(
    records: readonly InboundRecord[],
    model: { name: string; version: string; backend: string },
    startedAt: number,
    receivedAt: readonly number[],
  ): (inferredAt: number, error?: Error) => void {
    const links: Link[] = [];
    for (const record of records) {
      const span = this.spans.get(record);
      if (span?.isRecording()) links.push({ context: span.spanContext() });
    }
    if (links.length === 0) return noop;
    const attributes: Attributes = {
      [SPAN_ATTRIBUTE.model]: model.name,
      [SPAN_ATTRIBUTE.modelVersion]: model.version,
      [SPAN_ATTRIBUTE.backend]: model.backend,
      [SPAN_ATTRIBUTE.batchSize]: records.length,
    };
    const batchSpan = this.tracer.startSpan(`infer ${model.name}`, {
      kind: SpanKind.INTERNAL,
      links,
      attributes,
    });
    return (inferredAt, error) => {
      if (error) batchSpan.setStatus({ code: SpanStatusCode.ERROR, message: error.message });
      batchSpan.end();
      const batchSpanId = batchSpan.spanContext().spanId;
      const inferenceMs = round(inferredAt - startedAt);
      records.forEach((record, i) => {
        const span = this.spans.get(record);
        if (!span?.isRecording()) return;
        // Model, version, backend and batch size are on the batch span, one hop away by its id.
        span.setAttributes({
          [SPAN_ATTRIBUTE.batchWaitMs]: round(startedAt - receivedAt[i]!),
          [SPAN_ATTRIBUTE.inferenceMs]: inferenceMs,
          [SPAN_ATTRIBUTE.batchSpanId]: batchSpanId,
        });
      });
    };
  }

  /**
   * These answers go to the broker together: one producer span, linked to each request's span.
   * A result carries its request's context in `traceparent` so consumers of the result continue
   * the trace; a dead letter keeps the original record's headers as they were.
   */
  sending(
    records: readonly InboundRecord[],
    outs: readonly (OutboundRecord | null)[],
    /** Result topics (a dead letter is not a result); a string names the only one. */
    resultTopics: string | ReadonlySet<string>,
  ): void {
    const isResult =
      typeof resultTopics === 'string'
        ? (topic: string) => topic === resultTopics
        : (topic: string) => resultTopics.has(topic);
    const links: Link[] = [];
    const linked: InboundRecord[] = [];
    const topics = new Set<string>();
    for (let i = 0; i < records.length; i++) {
      const span = this.spans.get(records[i]!);
      const out = outs[i];
      if (!span || !out) continue;
      if (isResult(out.topic)) {
        propagation.inject(trace.setSpan(ROOT_CONTEXT, span), out.headers, headerSetter);
      }
      if (!span.isRecording()) continue;
      links.push({ context: span.spanContext() });
      linked.push(records[i]!);
      topics.add(out.topic);
    }
    if (links.length === 0) return;
    // Answers of one batch mostly share a topic; a mix (results and dead letters) names none.
    const [topic] = topics.size === 1 ? topics : [undefined];
    const send: SendSpan = {
      span: this.tracer.startSpan(topic ? `send ${topic}` : 'send', {
        kind: SpanKind.PRODUCER,
        links,
        attributes: {
          'messaging.system': 'kafka',
          'messaging.operation.type': 'send',
          'messaging.batch.message_count': links.length,
          ...(topic ? { 'messaging.destination.name': topic } : {}),
        },
      }),
      open: links.length,
    };
    for (const record of linked) this.sends.set(record, send);
  }

  /** The answer is acknowledged (or committed): the request's spans end. */
  answered(record: InboundRecord, outcome: 'result' | 'dead-letter', errorCode?: string): void {
    const span = this.spans.get(record);
    if (!span) return;
    span.setAttribute(SPAN_ATTRIBUTE.outcome, outcome);
    if (errorCode) {
      span.setAttribute(SPAN_ATTRIBUTE.errorCode, errorCode);
      span.setStatus({ code: SpanStatusCode.ERROR, message: errorCode });
    }
    this.finish(record, span);
  }

  /** Not answered by this worker after all (partition lost, transaction failed, shutdown). */
  abandoned(record: InboundRecord, reason: string): void {
    const span = this.spans.get(record);
    if (!span) return;
    span.setAttribute(SPAN_ATTRIBUTE.outcome, 'abandoned');
    span.addEvent('abandoned', { reason });
    this.finish(record, span);
  }

  private finish(record: InboundRecord, span: Span): void {
    span.end();
    this.spans.delete(record);
    const send = this.sends.get(record);
    if (send && --send.open === 0) send.span.end();
    this.sends.delete(record);
  }
}

const noop = (): void => undefined;

const round = (ms: number): number => Math.round(ms * 100) / 100;
