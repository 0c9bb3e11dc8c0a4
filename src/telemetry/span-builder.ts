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

const SCOPE: InstrumentationScope = { name: 'streamscore' };
const UNSET: SpanStatus = { code: SpanStatusCode.UNSET };

/**
 * A span that has ended, as span processors and exporters read it. The spans here are made
 * whole from records, after the fact, so the SDK's live Span (mutable, checked on every
 * setAttribute) would only add cost: these are what its `end()` hands on.
 */
class EndedSpan implements ReadableSpan {
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

/**
 * Makes OpenTelemetry spans from finished span records, with the ids, times and sampling
 * decisions the main thread already gave them (results went out carrying those ids), and hands
 * them to the span processors (the SDK's BatchSpanProcessor in the worker) as ended spans. Only
 * sampled requests have records.
 */
export class SpanBuilder {
  private readonly processors: SpanProcessor[];
  private readonly resource: Resource;

  constructor(private readonly options: SpanBuilderOptions) {
    this.processors = options.spanProcessors;
    this.resource = options.resource ?? emptyResource();
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
    const traceState = r.traceState ? new TraceState(r.traceState) : undefined;
    const context: SpanContext = {
      traceId: r.traceId,
      spanId: r.spanId,
      traceFlags: TraceFlags.SAMPLED,
      ...(traceState ? { traceState } : {}),
    };
    const parent: SpanContext | undefined = r.parentSpanId
      ? {
          traceId: r.traceId,
          spanId: r.parentSpanId,
          traceFlags: TraceFlags.SAMPLED,
          isRemote: true,
          ...(traceState ? { traceState } : {}),
        }
      : undefined;
    const attributes: Attributes = {
      'messaging.system': 'kafka',
      'messaging.operation.type': 'process',
      'messaging.destination.name': r.topic,
      'messaging.destination.partition.id': String(r.partition),
      'messaging.kafka.offset': r.offset,
      'messaging.consumer.group.name': this.options.groupId,
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
    const end = millisToHrTime(r.end);
    this.end(
      new EndedSpan(
        `process ${r.topic}`,
        SpanKind.CONSUMER,
        context,
        parent,
        millisToHrTime(r.start),
        end,
        attributes,
        [],
        r.abandonReason
          ? [{ name: 'abandoned', time: end, attributes: { reason: r.abandonReason } }]
          : [],
        r.errorCode ? { code: SpanStatusCode.ERROR, message: r.errorCode } : UNSET,
        this.resource,
        SCOPE,
      ),
    );
  }

  private end(span: EndedSpan): void {
    for (const processor of this.processors) processor.onEnd(span);
  }

  async forceFlush(): Promise<void> {
    await Promise.all(this.processors.map((p) => p.forceFlush()));
  }

  async shutdown(): Promise<void> {
    await Promise.all(this.processors.map((p) => p.shutdown()));
  }
}
