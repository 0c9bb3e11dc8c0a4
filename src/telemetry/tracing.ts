import { randomFillSync } from 'node:crypto';
import type { Worker } from 'node:worker_threads';
import { ROOT_CONTEXT, SpanKind, TraceFlags, type MeterProvider } from '@opentelemetry/api';
import { parseTraceParent } from '@opentelemetry/core';
import { SamplingDecision, TraceIdRatioBasedSampler, type Sampler } from '@opentelemetry/sdk-trace';
import type { StreamscoreConfig } from '../config/schema.js';
import type { InboundRecord, OutboundRecord } from '../kafka/types.js';
import { startModuleThread } from '../util/thread.js';
import type { Logger } from './logger.js';
import type { SpanBuilder } from './span-builder.js';
import { SPAN_ATTRIBUTE } from './span-names.js';
import {
  SpanRecordWriter,
  type GroupSpanRecord,
  type Outcome,
  type RequestSpanRecord,
} from './span-records.js';
import type {
  FromTraceThread,
  ProcessorMetricPoint,
  ToTraceThread,
  TraceThreadData,
} from './trace-thread.js';

export { SPAN_ATTRIBUTE } from './span-names.js';

/** Where finished span records go: the tracing thread, or a builder on this thread. */
export interface SpanSink {
  request(record: RequestSpanRecord): void;
  group(record: GroupSpanRecord): void;
}

export interface TracingHandle {
  /** The worker's per-request tracing (InferenceWorker's `tracing`). */
  requests: RequestTracing;
  /** Hands over what is buffered and waits until the thread has exported it (or failed to). */
  flush(): Promise<void>;
  /** Hands over what is buffered, lets the thread export it, and stops the thread. */
  shutdown(): Promise<void>;
}

export interface TracingOptions {
  /** service.version of the spans' resource. */
  version: string;
  /** The consumer group, on every process span. */
  groupId: string;
  /** For the span processor's own metrics (spans exported or dropped, its queue) at /metrics. */
  meterProvider?: MeterProvider | undefined;
}

/**
 * Starts tracing when an OTLP endpoint is configured; null otherwise, and then the worker makes
 * no spans and notes nothing per request.
 *
 * Spans are made and exported by the OpenTelemetry SDK on a thread of their own
 * (trace-thread.ts); the main thread keeps ids and times per request and hands finished ones over
 * in columns (span-records.ts). Sampling is decided here, when a request is read, so results carry
 * the right flags: a request follows its producer's decision (traceparent), a new trace is kept
 * at `tracesSampleRatio` (the SDK's TraceIdRatioBased sampler on its trace id).
 */
export function startTracing(
  config: StreamscoreConfig['telemetry'],
  log: Logger,
  options: TracingOptions,
): TracingHandle | null {
  if (config.otlpEndpoint === null || config.tracesSampleRatio === 0) return null;
  const url = `${config.otlpEndpoint.replace(/\/$/, '')}/v1/traces`;
  const thread = new TraceThread(
    {
      url,
      serviceName: config.serviceName,
      version: options.version,
      groupId: options.groupId,
      queueSize: config.traceQueueSize,
      nice: config.traceThreadNice,
    },
    log,
    options.meterProvider,
  );
  log.info({ url, sampleRatio: config.tracesSampleRatio }, 'tracing on: spans exported over OTLP');
  return {
    requests: new RequestTracing(thread, config.tracesSampleRatio),
    flush: () => thread.flush(),
    shutdown: () => thread.shutdown(),
  };
}

/** What the worker knows of a request's span while the request is in flight. */
class RequestTrace implements RequestSpanRecord {
  queueWaitMs: number;
  end = Number.NaN;
  batchWaitMs = Number.NaN;
  inferenceMs = Number.NaN;
  requestId = '';
  batchSpanId = '';
  outcome: Outcome = 'result';
  errorCode = '';
  abandonReason = '';
  /** The `send` span of the answers this request's answer went out with. */
  send: OpenGroup | undefined = undefined;

  constructor(
    readonly topic: string,
    readonly partition: number,
    readonly offset: number,
    readonly traceId: string,
    readonly spanId: string,
    readonly parentSpanId: string,
    readonly traceState: string,
    readonly sampled: boolean,
    readonly start: number,
    timestamp: number,
  ) {
    this.queueWaitMs = Math.max(0, Date.now() - timestamp);
  }
}

/** The record's trace while it is in flight (InboundRecord.trace), if it is traced. */
const traceOf = (record: InboundRecord): RequestTrace | undefined =>
  record.trace as RequestTrace | undefined;

/** A `send` span that ends with the last of its requests. */
interface OpenGroup extends GroupSpanRecord {
  open: number;
}

const SAMPLED = TraceFlags.SAMPLED;
const NO_ATTRIBUTES = {};
const NO_LINKS: never[] = [];

/**
 * Random trace and span ids, cut from a buffer refilled by the CSPRNG 8 KiB at a time: a tenth
 * of the cost of the SDK's generator (which draws Math.random per 4 bytes), paid per request.
 */
class IdPool {
  private readonly pool = Buffer.allocUnsafe(8192);
  private offset = this.pool.length;

  traceId(): string {
    return this.take(16, '00000000000000000000000000000000');
  }

  spanId(): string {
    return this.take(8, '0000000000000000');
  }

  private take(bytes: number, invalid: string): string {
    if (this.offset + bytes > this.pool.length) {
      randomFillSync(this.pool);
      this.offset = 0;
    }
    const id = this.pool.toString('hex', this.offset, (this.offset += bytes));
    // All zeros is not a valid id (2^-64 odds for a span id; drawn again).
    return id === invalid ? this.take(bytes, invalid) : id;
  }
}

/** Wall-clock time in fractional milliseconds, monotonic within the process. */
const epochNow = (): number => performance.timeOrigin + performance.now();

const round = (ms: number): number => Math.round(ms * 100) / 100;

/**
 * The spans of one request's way through the worker, per the OpenTelemetry messaging
 * conventions: a consumer `process <topic>` span whose parent is the producer's context (the
 * record's traceparent), one `infer <model>` span per batch linked to every request in it, and one
 * producer `send <topic>` span per batch of answers handed to the broker, linked to each request.
 * A result's traceparent is its request's process span (the span the result was created in), so
 * consumers of results continue the producer's trace.
 *
 * Per request this notes ids and times only; the spans are made elsewhere (SpanSink).
 */
export class RequestTracing {
  private readonly ids = new IdPool();
  /** Decides for requests that start a trace; none at 100 % (every one is kept). */
  private readonly newTraces: Sampler | undefined;

  constructor(
    private readonly spans: SpanSink,
    sampleRatio: number,
  ) {
    this.newTraces = sampleRatio >= 1 ? undefined : new TraceIdRatioBasedSampler(sampleRatio);
  }

  private keepsNewTrace(traceId: string): boolean {
    if (!this.newTraces) return true;
    const { decision } = this.newTraces.shouldSample(
      ROOT_CONTEXT,
      traceId,
      '',
      SpanKind.CONSUMER,
      NO_ATTRIBUTES,
      NO_LINKS,
    );
    return decision === SamplingDecision.RECORD_AND_SAMPLED;
  }

  /** The request was read: its process span starts, as a child of the producer's span. */
  received(record: InboundRecord): void {
    const header = record.headers['traceparent'];
    const parent = header ? parseTraceParent(header.toString('latin1')) : null;
    const traceId = parent?.traceId ?? this.ids.traceId();
    const sampled = parent ? (parent.traceFlags & SAMPLED) !== 0 : this.keepsNewTrace(traceId);
    const traceState = parent ? (record.headers['tracestate']?.toString('latin1') ?? '') : '';
    record.trace = new RequestTrace(
      record.topic,
      record.partition,
      Number(record.offset),
      traceId,
      this.ids.spanId(),
      parent?.spanId ?? '',
      traceState,
      sampled,
      epochNow(),
      record.timestamp,
    );
  }

  /** The record's span context, for log lines about it. */
  logFields(record: InboundRecord): { trace_id: string; span_id: string } | Record<string, never> {
    const t = traceOf(record);
    return t ? { trace_id: t.traceId, span_id: t.spanId } : {};
  }

  /** The request id is known once decoded. */
  identified(record: InboundRecord, requestId: string): void {
    const t = traceOf(record);
    if (t) t.requestId = requestId;
  }

  /** One model call for these requests: a batch span linked to each request's span. */
  batch(
    records: readonly InboundRecord[],
    model: { name: string; version: string; backend: string },
    startedAt: number,
    receivedAt: readonly number[],
  ): (inferredAt: number, error?: Error) => void {
    const sampled: RequestTrace[] = [];
    records.forEach((record, i) => {
      const t = traceOf(record);
      if (!t?.sampled) return;
      // Known now: the wait ends as the batch starts.
      t.batchWaitMs = round(startedAt - receivedAt[i]!);
      sampled.push(t);
    });
    if (sampled.length === 0) return noop;
    const spanId = this.ids.spanId();
    const traceId = this.ids.traceId();
    const start = epochNow();
    return (inferredAt, error) => {
      const inferenceMs = round(inferredAt - startedAt);
      for (const t of sampled) {
        t.batchSpanId = spanId;
        t.inferenceMs = inferenceMs;
      }
      const links = linkIds(sampled);
      this.spans.group({
        kind: 'infer',
        name: `infer ${model.name}`,
        traceId,
        spanId,
        start,
        end: epochNow(),
        attributes: {
          [SPAN_ATTRIBUTE.model]: model.name,
          [SPAN_ATTRIBUTE.modelVersion]: model.version,
          [SPAN_ATTRIBUTE.backend]: model.backend,
          [SPAN_ATTRIBUTE.batchSize]: records.length,
        },
        links,
        error: error?.message ?? '',
      });
    };
  }

  /**
   * These answers go to the broker together: one producer span, linked to each request's span.
   * A result carries its request's context in `traceparent` (and the producer's `tracestate`) so
   * consumers of the result continue the trace; a dead letter keeps the record's headers as they
   * were.
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
    const linked: RequestTrace[] = [];
    const topics = new Set<string>();
    for (let i = 0; i < records.length; i++) {
      const t = traceOf(records[i]!);
      const out = outs[i];
      if (!t || !out) continue;
      if (isResult(out.topic)) {
        out.headers['traceparent'] = `00-${t.traceId}-${t.spanId}-${t.sampled ? '01' : '00'}`;
        if (t.traceState) out.headers['tracestate'] = t.traceState;
      }
      if (!t.sampled) continue;
      linked.push(t);
      topics.add(out.topic);
    }
    if (linked.length === 0) return;
    // Answers of one batch mostly share a topic; a mix (results and dead letters) names none.
    const [topic] = topics.size === 1 ? topics : [undefined];
    const send: OpenGroup = {
      kind: 'send',
      name: topic ? `send ${topic}` : 'send',
      traceId: this.ids.traceId(),
      spanId: this.ids.spanId(),
      start: epochNow(),
      end: Number.NaN,
      attributes: {
        'messaging.system': 'kafka',
        'messaging.operation.type': 'send',
        'messaging.batch.message_count': linked.length,
        ...(topic ? { 'messaging.destination.name': topic } : {}),
      },
      links: linkIds(linked),
      error: '',
      open: linked.length,
    };
    for (const t of linked) t.send = send;
  }

  /** The answer is acknowledged (or committed): the request's spans end. */
  answered(record: InboundRecord, outcome: 'result' | 'dead-letter', errorCode?: string): void {
    this.finish(record, outcome, errorCode ?? '', '');
  }

  /** Not answered by this worker after all (partition lost, transaction failed, shutdown). */
  abandoned(record: InboundRecord, reason: string): void {
    this.finish(record, 'abandoned', '', reason);
  }

  private finish(
    record: InboundRecord,
    outcome: Outcome,
    errorCode: string,
    abandonReason: string,
  ): void {
    const t = traceOf(record);
    if (!t) return;
    record.trace = undefined;
    if (!t.sampled) return;
    t.end = epochNow();
    t.outcome = outcome;
    t.errorCode = errorCode;
    t.abandonReason = abandonReason;
    this.spans.request(t);
    const send = t.send;
    if (send && --send.open === 0) {
      send.end = t.end;
      this.spans.group(send);
    }
  }
}

const noop = (): void => undefined;

/** Links to these requests' spans: trace id, span id, trace id, span id, … */
function linkIds(traces: readonly RequestTrace[]): string[] {
  const ids = new Array<string>(traces.length * 2);
  for (let i = 0; i < traces.length; i++) {
    ids[2 * i] = traces[i]!.traceId;
    ids[2 * i + 1] = traces[i]!.spanId;
  }
  return ids;
}

/** Request records held before they are handed over together (fewer for a small queue). */
const HANDOFF_SPANS = 1024;
/** The longest a finished span waits on this thread before it is handed over. */
const HANDOFF_DELAY_MS = 200;

/** Spans dropped before reaching the processor: counted like the processor's own drops. */
const HANDOFF_DROPPED_ATTRIBUTES = {
  'otel.component.type': 'streamscore_trace_handoff',
  'otel.component.name': 'streamscore_trace_handoff/0',
  'error.type': 'queue_full',
};

const PROCESSED = 'otel.sdk.processor.span.processed';
const QUEUE_SIZE = 'otel.sdk.processor.span.queue.size';
const QUEUE_CAPACITY = 'otel.sdk.processor.span.queue.capacity';

/** Adds a cumulative point into `totals`, summing points of the same metric and attributes. */
function addPoint(totals: Map<string, ProcessorMetricPoint>, point: ProcessorMetricPoint): void {
  const key = `${point.name} ${JSON.stringify(point.attributes)}`;
  const before = totals.get(key)?.value ?? 0;
  totals.set(key, { ...point, value: before + point.value });
}

/**
 * The main thread's end of the tracing thread: buffers finished span records and hands them
 * over every 1,024 requests (a quarter of the queue if that is less) or 200 ms. At most `queueSize` spans are in flight to the thread; past
 * that (the thread cannot keep up) new ones are dropped and counted, never waited for. A thread
 * that dies is logged and started again; what it held is counted as dropped.
 */
class TraceThread implements SpanSink {
  private readonly writer: SpanRecordWriter;
  private timer: NodeJS.Timeout | undefined;
  private worker: Worker | undefined;
  private inFlight = 0;
  private droppedHere = 0;
  /** The live thread's latest processor metrics (cumulative). */
  private points: ProcessorMetricPoint[] = [];
  /** Spans processed by threads that died, added to the live thread's counts. */
  private readonly retired = new Map<string, ProcessorMetricPoint>();
  private readonly flushes = new Map<number, () => void>();
  private nextFlush = 0;
  private stopping: Promise<void> | undefined;
  private restartDelayMs = 1000;

  constructor(
    private readonly data: TraceThreadData,
    private readonly log: Logger,
    meterProvider: MeterProvider | undefined,
  ) {
    this.writer = new SpanRecordWriter(Math.min(HANDOFF_SPANS, Math.floor(data.queueSize / 4)));
    this.worker = this.spawn();
    if (meterProvider) this.mirrorMetrics(meterProvider);
  }

  request(record: RequestSpanRecord): void {
    if (this.writer.full) this.handOff();
    this.writer.add(record);
    this.timer ??= setTimeout(() => this.handOff(), HANDOFF_DELAY_MS).unref();
  }

  group(record: GroupSpanRecord): void {
    this.writer.addGroup(record);
    this.timer ??= setTimeout(() => this.handOff(), HANDOFF_DELAY_MS).unref();
  }

  /** Waits until everything handed over so far is exported (or failed to be). */
  flush(): Promise<void> {
    this.handOff();
    const worker = this.worker;
    if (!worker) return Promise.resolve();
    const id = this.nextFlush++;
    return new Promise((resolve) => {
      this.flushes.set(id, resolve);
      worker.postMessage({ type: 'flush', id } satisfies ToTraceThread);
    });
  }

  shutdown(): Promise<void> {
    this.stopping ??= (async () => {
      this.handOff();
      const worker = this.worker;
      if (!worker) return;
      const closed = new Promise<void>((resolve) => {
        worker.once('exit', () => resolve());
        worker.on('message', (m: FromTraceThread) => m.type === 'closed' && resolve());
      });
      worker.postMessage({ type: 'shutdown' } satisfies ToTraceThread);
      // The exporter gives up on an unreachable receiver after its own timeout (10 s).
      const timeout = new Promise<void>((resolve) => setTimeout(resolve, 15_000).unref());
      await Promise.race([closed, timeout]);
      await worker.terminate();
    })();
    return this.stopping;
  }

  private handOff(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    if (this.writer.size === 0) return;
    const records = this.writer.take();
    const spans = records.count + records.groups.length;
    if (!this.worker || this.inFlight + spans > this.data.queueSize) {
      this.droppedHere += spans;
      return;
    }
    this.inFlight += spans;
    // The numbers move to the thread (no copy); the writer has a fresh array already.
    this.worker.postMessage({ type: 'spans', records } satisfies ToTraceThread, [
      records.numbers.buffer as ArrayBuffer,
    ]);
  }

  private spawn(): Worker {
    const worker = startModuleThread(import.meta.url, 'trace-thread', { workerData: this.data });
    // The thread never keeps the process alive; shutdown() waits for it explicitly.
    worker.unref();
    worker.on('message', (message: FromTraceThread) => {
      if (message.type === 'built') {
        this.inFlight -= message.spans;
        this.restartDelayMs = 1000;
      } else if (message.type === 'stats') {
        this.points = message.points;
      } else if (message.type === 'flushed') {
        this.flushes.get(message.id)?.();
        this.flushes.delete(message.id);
      }
    });
    worker.on('error', (err) => this.log.error({ err }, 'tracing thread failed'));
    worker.on('exit', (code) => {
      if (this.stopping) return;
      this.log.error(
        { code, spansLost: this.inFlight, restartInMs: this.restartDelayMs },
        'tracing thread exited; starting it again',
      );
      this.worker = undefined;
      this.droppedHere += this.inFlight;
      this.inFlight = 0;
      for (const point of this.points) if (point.name === PROCESSED) addPoint(this.retired, point);
      this.points = [];
      for (const resolve of this.flushes.values()) resolve();
      this.flushes.clear();
      setTimeout(() => {
        if (!this.stopping) this.worker = this.spawn();
      }, this.restartDelayMs).unref();
      this.restartDelayMs = Math.min(30_000, this.restartDelayMs * 2);
    });
    return worker;
  }

  /** The processor's own metrics, under the SDK's names, plus what was dropped before it. */
  private mirrorMetrics(meterProvider: MeterProvider): void {
    const meter = meterProvider.getMeter('@opentelemetry/sdk-trace');
    const observeLatest = (name: string, description: string): void => {
      meter
        .createObservableUpDownCounter(name, { unit: '{span}', description })
        .addCallback((result) => {
          for (const p of this.points) if (p.name === name) result.observe(p.value, p.attributes);
        });
    };
    meter
      .createObservableCounter(PROCESSED, {
        unit: '{span}',
        description:
          'Spans whose processing finished: exported, or failed or dropped (error.type).',
      })
      .addCallback((result) => {
        const totals = new Map(this.retired);
        for (const point of this.points) if (point.name === PROCESSED) addPoint(totals, point);
        for (const point of totals.values()) result.observe(point.value, point.attributes);
        result.observe(this.droppedHere, HANDOFF_DROPPED_ATTRIBUTES);
      });
    observeLatest(QUEUE_SIZE, 'Spans in the span processor queue.');
    observeLatest(QUEUE_CAPACITY, 'The most spans the span processor queue holds.');
  }
}

/**
 * Builds the spans on the calling thread, straight away: for tests and for programs that bring
 * their own span processors. The worker uses the tracing thread (startTracing).
 */
export class LocalSpanSink implements SpanSink {
  private readonly writer = new SpanRecordWriter(1);

  constructor(private readonly builder: SpanBuilder) {}

  request(record: RequestSpanRecord): void {
    this.writer.add(record);
    this.builder.build(this.writer.take());
  }

  group(record: GroupSpanRecord): void {
    this.writer.addGroup(record);
    this.builder.build(this.writer.take());
  }
}
