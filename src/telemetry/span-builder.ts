import {
  SpanKind,
  SpanStatusCode,
  TraceFlags,
  type Attributes,
  type HrTime,
  type Link,
  type SpanContext,
  type SpanStatus,
} from '@opentelemetry/api';
import {
  hrTimeDuration,
  millisToHrTime,
  TraceState,
  type InstrumentationScope,
} from '@opentelemetry/core';
import { emptyResource, type Resource } from '@opentelemetry/resources';
import type { ReadableSpan, SpanProcessor, TimedEvent } from '@opentelemetry/sdk-trace';
import { SPAN_ATTRIBUTE } from './span-names.js';
import { forEachRequestSpan, type RequestSpanRecord, type SpanRecords } from './span-records.js';

export interface SpanBuilderOptions {
  spanProcessors: SpanProcessor[];
  resource?: Resource;
  /** The consumer group, on every process span. */
  groupId: string;
}

export const SCOPE: InstrumentationScope = { name: 'streamscore' };
const UNSET: SpanStatus = { code: SpanStatusCode.UNSET };

/**
 * A span that has ended, as span processors and exporters read it. The spans here are made
 * whole from records, after the fact, so the SDK's live Span (mutable, checked on every
 * setAttribute) would only add cost: these are what its `end()` hands on.
 */
export class EndedSpan implements ReadableSpan {
  readonly ended = true;
  readonly droppedAttributesCount = 0;
  readonly droppedEventsCount = 0;
  readonly droppedLinksCount = 0;
  readonly duration: HrTime;

  constructor(
    readonly name: string,
    readonly kind: SpanKind,
    private readonly context: SpanContext,
    readonly parentSpanContext: SpanContext | undefined,
    readonly startTime: HrTime,
    readonly endTime: HrTime,
    readonly attributes: Attributes,
    readonly links: Link[],
    readonly events: TimedEvent[],
    readonly status: SpanStatus,
    readonly resource: Resource,
    readonly instrumentationScope: InstrumentationScope,
  ) {
    this.duration = hrTimeDuration(startTime, endTime);
  }

  spanContext(): SpanContext {
    return this.context;
  }
}

/** What every request span of one builder shares. */
export interface RequestSpanShared {
  readonly groupId: string;
  readonly resource: Resource;
  readonly scope: InstrumentationScope;
}

/**
 * A request's `process` span over its record. One is made per request, so it holds only the
 * record: the span's fields are worked out when read. The OTLP encoder (otlp/trace-serializer.ts)
 * reads the record itself and never asks; any other exporter or processor sees an ordinary
 * ReadableSpan.
 */
export class RequestSpan implements ReadableSpan {
  readonly ended = true;
  readonly kind = SpanKind.CONSUMER;
  readonly droppedAttributesCount = 0;
  readonly droppedEventsCount = 0;
  readonly droppedLinksCount = 0;

  constructor(
    readonly record: RequestSpanRecord,
    readonly shared: RequestSpanShared,
  ) {}

  /** A request span has a parent, not links (the batch and send spans link to it). */
  get links(): Link[] {
    return [];
  }

  get resource(): Resource {
    return this.shared.resource;
  }

  get instrumentationScope(): InstrumentationScope {
    return this.shared.scope;
  }

  get name(): string {
    return `process ${this.record.topic}`;
  }

  private get traceState(): TraceState | undefined {
    return this.record.traceState ? new TraceState(this.record.traceState) : undefined;
  }

  spanContext(): SpanContext {
    const r = this.record;
    const traceState = this.traceState;
    return {
      traceId: r.traceId,
      spanId: r.spanId,
      traceFlags: TraceFlags.SAMPLED,
      ...(traceState ? { traceState } : {}),
    };
  }

  get parentSpanContext(): SpanContext | undefined {
    const r = this.record;
    if (!r.parentSpanId) return undefined;
    const traceState = this.traceState;
    return {
      traceId: r.traceId,
      spanId: r.parentSpanId,
      traceFlags: TraceFlags.SAMPLED,
      isRemote: true,
      ...(traceState ? { traceState } : {}),
    };
  }

  get startTime(): HrTime {
    return millisToHrTime(this.record.start);
  }

  get endTime(): HrTime {
    return millisToHrTime(this.record.end);
  }

  get duration(): HrTime {
    return hrTimeDuration(this.startTime, this.endTime);
  }

  /** In this order on the wire too (otlp/trace-serializer.ts). */
  get attributes(): Attributes {
    const r = this.record;
    const attributes: Attributes = {
      'messaging.system': 'kafka',
      'messaging.operation.type': 'process',
      'messaging.destination.name': r.topic,
      'messaging.destination.partition.id': String(r.partition),
      'messaging.kafka.offset': r.offset,
      'messaging.consumer.group.name': this.shared.groupId,
      [SPAN_ATTRIBUTE.queueWaitMs]: r.queueWaitMs,
      [SPAN_ATTRIBUTE.outcome]: r.outcome,
    };
    if (r.requestId) attributes['messaging.message.id'] = r.requestId;
    if (r.batchSpanId) {
      // Model, version, backend and batch size are on the batch span, one hop away by its id.
      attributes[SPAN_ATTRIBUTE.batchSpanId] = r.batchSpanId;
      attributes[SPAN_ATTRIBUTE.batchWaitMs] = r.batchWaitMs;
      attributes[SPAN_ATTRIBUTE.inferenceMs] = r.inferenceMs;
    }
    if (r.errorCode) attributes[SPAN_ATTRIBUTE.errorCode] = r.errorCode;
    return attributes;
  }

  get events(): TimedEvent[] {
    const r = this.record;
    return r.abandonReason
      ? [{ name: 'abandoned', time: this.endTime, attributes: { reason: r.abandonReason } }]
      : [];
  }

  get status(): SpanStatus {
    const code = this.record.errorCode;
    return code ? { code: SpanStatusCode.ERROR, message: code } : UNSET;
  }
}

/**
 * Makes OpenTelemetry spans from finished span records, with the ids, times and sampling
 * decisions the main thread already gave them (results went out carrying those ids), and hands
 * them to the span processors (the SDK's BatchSpanProcessor in the worker) as ended spans. Only
 * sampled requests have records.
 */
export class SpanBuilder {
  private readonly processors: SpanProcessor[];
  private readonly resource: Resource;
  private readonly shared: RequestSpanShared;

  constructor(options: SpanBuilderOptions) {
    this.processors = options.spanProcessors;
    this.resource = options.resource ?? emptyResource();
    this.shared = { groupId: options.groupId, resource: this.resource, scope: SCOPE };
  }

  /** Makes and ends every span in `records`; returns how many. */
  build(records: SpanRecords): number {
    forEachRequestSpan(records, (r) => this.request(r));
    for (const g of records.groups) {
      const links: Link[] = [];
      for (let i = 0; i < g.links.length; i += 2) {
        links.push({
          context: {
            traceId: g.links[i]!,
            spanId: g.links[i + 1]!,
            traceFlags: TraceFlags.SAMPLED,
          },
        });
      }
      this.end(
        new EndedSpan(
          g.name,
          g.kind === 'send' ? SpanKind.PRODUCER : SpanKind.INTERNAL,
          { traceId: g.traceId, spanId: g.spanId, traceFlags: TraceFlags.SAMPLED },
          undefined,
          millisToHrTime(g.start),
          millisToHrTime(g.end),
          g.attributes,
          links,
          [],
          g.error ? { code: SpanStatusCode.ERROR, message: g.error } : UNSET,
          this.resource,
          SCOPE,
        ),
      );
    }
    return records.count + records.groups.length;
  }

  private request(r: RequestSpanRecord): void {
    this.end(new RequestSpan(r, this.shared));
  }

  private end(span: ReadableSpan): void {
    for (const processor of this.processors) processor.onEnd(span);
  }

  async forceFlush(): Promise<void> {
    await Promise.all(this.processors.map((p) => p.forceFlush()));
  }

  async shutdown(): Promise<void> {
    await Promise.all(this.processors.map((p) => p.shutdown()));
  }
}
