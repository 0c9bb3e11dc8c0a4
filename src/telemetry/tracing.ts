import {
  context,
  propagation,
  ROOT_CONTEXT,
  SpanKind,
  SpanStatusCode,
  trace,
  type Attributes,
  type Link,
  type Span,
  type TextMapGetter,
  type Tracer,
} from '@opentelemetry/api';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import {
  BatchSpanProcessor,
  NodeTracerProvider,
  ParentBasedSampler,
  TraceIdRatioBasedSampler,
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
): TracingHandle | null {
  if (config.otlpEndpoint === null || config.tracesSampleRatio === 0) return null;
  const url = `${config.otlpEndpoint.replace(/\/$/, '')}/v1/traces`;
  const provider = new NodeTracerProvider({
    // The same resource as the metrics, so traces and metrics of one worker join up.
    resource: telemetryResource(config.serviceName, version),
    // A request whose producer sampled its trace is always recorded; new traces by ratio.
    sampler: new ParentBasedSampler({
      root: new TraceIdRatioBasedSampler(config.tracesSampleRatio),
    }),
    spanProcessors: [
      new BatchSpanProcessor(new OTLPTraceExporter({ url }), {
        maxQueueSize: 8192,
        maxExportBatchSize: 1024,
        scheduledDelayMillis: 1000,
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

const headerGetter: TextMapGetter<RecordHeaders> = {
  keys: (carrier) => Object.keys(carrier),
  get: (carrier, key) => carrier[key]?.toString('latin1'),
};

/** Span and attribute names; README's "Traces" table lists the same. */
export const SPAN_ATTRIBUTE = {
  queueWaitMs: 'streamscore.queue_wait_ms',
  batchWaitMs: 'streamscore.batch_wait_ms',
  inferenceMs: 'streamscore.inference_ms',
  batchSize: 'streamscore.batch.size',
  model: 'streamscore.model.name',
  modelVersion: 'streamscore.model.version',
  backend: 'streamscore.model.backend',
  outcome: 'streamscore.outcome',
  errorCode: 'streamscore.error.code',
} as const;

/**
 * The spans of one request's way through the worker, per the OpenTelemetry messaging
 * conventions: a consumer `process <topic>` span whose parent is the producer's context (the
 * record's traceparent), one `infer <model>` span per batch linked to every request in it, and a
 * producer `send <topic>` span per answer whose context goes into the result's traceparent.
 */
export class RequestTracing {
  private readonly spans = new WeakMap<InboundRecord, Span>();
  private readonly sends = new WeakMap<InboundRecord, Span>();

  constructor(
    private readonly tracer: Tracer,
    private readonly groupId: string,
  ) {}

  /** The request was read: its process span starts, as a child of the producer's span. */
  received(record: InboundRecord): void {
    const parent = propagation.extract(ROOT_CONTEXT, record.headers, headerGetter);
    const span = this.tracer.startSpan(
      `process ${record.topic}`,
      {
        kind: SpanKind.CONSUMER,
        attributes: {
          'messaging.system': 'kafka',
          'messaging.operation.type': 'process',
          'messaging.operation.name': 'process',
          'messaging.destination.name': record.topic,
          'messaging.destination.partition.id': String(record.partition),
          'messaging.kafka.offset': Number(record.offset),
          'messaging.consumer.group.name': this.groupId,
          [SPAN_ATTRIBUTE.queueWaitMs]: Math.max(0, Date.now() - record.timestamp),
        },
      },
      parent,
    );
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
      if (span) links.push({ context: span.spanContext() });
    }
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
      records.forEach((record, i) => {
        const span = this.spans.get(record);
        if (!span) return;
        // Model, version and backend are on the batch span, one hop away by its id: at 100 %
        // sampling every attribute and event per request is paid tens of thousands of times a second.
        span.setAttributes({
          [SPAN_ATTRIBUTE.batchWaitMs]: round(startedAt - receivedAt[i]!),
          [SPAN_ATTRIBUTE.inferenceMs]: round(inferredAt - startedAt),
          [SPAN_ATTRIBUTE.batchSize]: records.length,
          'streamscore.batch.span_id': batchSpanId,
        });
      });
    };
  }

  /**
   * The answer leaves: a producer span, child of the request's span. A result carries its
   * context in `traceparent` so consumers of the result continue the trace; a dead letter keeps
   * the original record's headers as they were.
   */
  sending(record: InboundRecord, out: OutboundRecord | null, isResult: boolean): void {
    const span = this.spans.get(record);
    if (!span || !out) return;
    const send = this.tracer.startSpan(
      `send ${out.topic}`,
      {
        kind: SpanKind.PRODUCER,
        attributes: {
          'messaging.system': 'kafka',
          'messaging.operation.type': 'send',
          'messaging.operation.name': 'send',
          'messaging.destination.name': out.topic,
        },
      },
      trace.setSpan(context.active(), span),
    );
    this.sends.set(record, send);
    if (!isResult) return;
    const carrier: Record<string, string> = {};
    propagation.inject(trace.setSpan(ROOT_CONTEXT, send), carrier);
    Object.assign(out.headers, carrier);
  }

  /** The answer is acknowledged (or committed): the request's spans end. */
  answered(record: InboundRecord, outcome: 'result' | 'dead-letter', errorCode?: string): void {
    this.sends.get(record)?.end();
    const span = this.spans.get(record);
    if (!span) return;
    span.setAttribute(SPAN_ATTRIBUTE.outcome, outcome);
    if (errorCode) {
      span.setAttribute(SPAN_ATTRIBUTE.errorCode, errorCode);
      span.setStatus({ code: SpanStatusCode.ERROR, message: errorCode });
    }
    span.end();
    this.spans.delete(record);
    this.sends.delete(record);
  }

  /** Not answered by this worker after all (partition lost, transaction failed, shutdown). */
  abandoned(record: InboundRecord, reason: string): void {
    this.sends.get(record)?.end();
    const span = this.spans.get(record);
    if (!span) return;
    span.setAttribute(SPAN_ATTRIBUTE.outcome, 'abandoned');
    span.addEvent('abandoned', { reason });
    span.end();
    this.spans.delete(record);
    this.sends.delete(record);
  }
}

const round = (ms: number): number => Math.round(ms * 100) / 100;
