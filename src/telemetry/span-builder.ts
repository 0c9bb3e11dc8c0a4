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
import {
  GROUP_ID_WORDS,
  ID,
  ID_WORDS,
  N,
  NUMBERS,
  readRequestSpan,
  S,
  TEXTS,
  textOf,
  type GroupSpanRecord,
  type RequestSpanRecord,
  type SpanRecords,
} from './span-records.js';
import { SPAN_ID_WORDS, TRACE_ID_WORDS, wordsToHex } from './trace-ids.js';

export interface SpanBuilderOptions {
  spanProcessors: SpanProcessor[];
  resource?: Resource;
  /** The consumer group, on every process span. */
  groupId: string;
}

export const SCOPE: InstrumentationScope = { name: 'streamscore' };
const UNSET: SpanStatus = { code: SpanStatusCode.UNSET };

/**
 * A sampled span context over id words, its hex ids made when first read: span processors look
 * at every span's context for its flags (BatchSpanProcessor drops unsampled spans), and only
 * exporters other than streamscore's read the ids.
 */
class WordsSpanContext implements SpanContext {
  readonly traceFlags = TraceFlags.SAMPLED;
  private hexTraceId: string | undefined;
  private hexSpanId: string | undefined;

  constructor(
    private readonly words: Int32Array,
    private readonly traceAt: number,
    private readonly spanAt: number,
    readonly traceState?: TraceState,
    readonly isRemote?: boolean,
  ) {}

  get traceId(): string {
    return (this.hexTraceId ??= wordsToHex(this.words, this.traceAt, TRACE_ID_WORDS));
  }

  get spanId(): string {
    return (this.hexSpanId ??= wordsToHex(this.words, this.spanAt, SPAN_ID_WORDS));
  }
}

/** What every request span of one builder shares. */
export interface RequestSpanShared {
  readonly groupId: string;
  readonly resource: Resource;
  readonly scope: InstrumentationScope;
}

/**
 * What streamscore's spans share: they have ended, drop nothing, and keep their start and end as
 * epoch milliseconds (OpenTelemetry's HrTime is made when read).
 */
abstract class RecordedSpan {
  readonly ended = true;
  readonly droppedAttributesCount = 0;
  readonly droppedEventsCount = 0;
  readonly droppedLinksCount = 0;

  protected abstract get startMillis(): number;
  protected abstract get endMillis(): number;

  get startTime(): HrTime {
    return millisToHrTime(this.startMillis);
  }

  get endTime(): HrTime {
    return millisToHrTime(this.endMillis);
  }

  get duration(): HrTime {
    return hrTimeDuration(this.startTime, this.endTime);
  }
}

/**
 * A request's `process` span over its row of a SpanRecords message. One is made per request, so
 * it holds only the message and the row: the span's fields are worked out when read. The OTLP
 * encoder (otlp/trace-serializer.ts) reads the row itself and never asks; any other exporter or
 * processor sees an ordinary ReadableSpan.
 */
export class RequestSpan extends RecordedSpan implements ReadableSpan {
  readonly kind = SpanKind.CONSUMER;
  private read: RequestSpanRecord | undefined;

  constructor(
    readonly records: SpanRecords,
    readonly index: number,
    readonly shared: RequestSpanShared,
  ) {
    super();
  }

  protected get startMillis(): number {
    return this.records.numbers[this.index * NUMBERS + N.start]!;
  }

  protected get endMillis(): number {
    return this.records.numbers[this.index * NUMBERS + N.end]!;
  }

  /** The row as a record with hex ids, made on first read. */
  get record(): RequestSpanRecord {
    return (this.read ??= readRequestSpan(this.records, this.index));
  }

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
    const text = textOf(this.records, this.index * TEXTS + S.traceState);
    return text ? new TraceState(text) : undefined;
  }

  spanContext(): SpanContext {
    const d = this.index * ID_WORDS;
    return new WordsSpanContext(this.records.ids, d + ID.trace, d + ID.span, this.traceState);
  }

  get parentSpanContext(): SpanContext | undefined {
    const d = this.index * ID_WORDS;
    const ids = this.records.ids;
    if (ids[d + ID.parent] === 0 && ids[d + ID.parent + 1] === 0) return undefined;
    return new WordsSpanContext(ids, d + ID.trace, d + ID.parent, this.traceState, true);
  }

  /** In this order on the wire too (otlp/trace-serializer.ts). */
  get attributes(): Attributes {
    const r = this.record;
    const attributes: Attributes = {
      'messaging.system': 'kafka',
      'messaging.operation.type': 'process',
      'messaging.destination.name': r.topic,
      'messaging.destination.partition.id': String(r.partition),
      'messaging.consumer.group.name': this.shared.groupId,
      [SPAN_ATTRIBUTE.outcome]: r.outcome,
      'messaging.kafka.offset': r.offset,
      [SPAN_ATTRIBUTE.queueWaitMs]: r.queueWaitMs,
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

/** The link to request `i` of a group: its trace id and span id as hex. */
function linkContext(links: Int32Array, i: number): SpanContext {
  const at = i * GROUP_ID_WORDS;
  return {
    traceId: wordsToHex(links, at, TRACE_ID_WORDS),
    spanId: wordsToHex(links, at + TRACE_ID_WORDS, SPAN_ID_WORDS),
    traceFlags: TraceFlags.SAMPLED,
  };
}

/**
 * An `infer` or `send` span over its record: a root span linked to each of its requests. Its
 * ids and links are worked out when read; the OTLP encoder writes them from the record's words.
 * The spans here are made whole from records, after the fact, so the SDK's live Span (mutable,
 * checked on every setAttribute) would only add cost.
 */
export class GroupSpan extends RecordedSpan implements ReadableSpan {
  readonly parentSpanContext = undefined;
  readonly events: TimedEvent[] = [];
  readonly instrumentationScope = SCOPE;

  constructor(
    readonly record: GroupSpanRecord,
    readonly resource: Resource,
  ) {
    super();
  }

  protected get startMillis(): number {
    return this.record.start;
  }

  protected get endMillis(): number {
    return this.record.end;
  }

  get name(): string {
    return this.record.name;
  }

  get kind(): SpanKind {
    return this.record.kind === 'send' ? SpanKind.PRODUCER : SpanKind.INTERNAL;
  }

  spanContext(): SpanContext {
    return new WordsSpanContext(this.record.ids, 0, TRACE_ID_WORDS);
  }

  get attributes(): Attributes {
    return this.record.attributes;
  }

  get links(): Link[] {
    const links = this.record.links;
    const out: Link[] = [];
    for (let i = 0; i < links.length / GROUP_ID_WORDS; i++) {
      out.push({ context: linkContext(links, i) });
    }
    return out;
  }

  get status(): SpanStatus {
    const error = this.record.error;
    return error ? { code: SpanStatusCode.ERROR, message: error } : UNSET;
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
    for (let i = 0; i < records.count; i++) this.end(new RequestSpan(records, i, this.shared));
    for (const g of records.groups) this.end(new GroupSpan(g, this.resource));
    return records.count + records.groups.length;
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
