import type { Worker } from 'node:worker_threads';
import { TraceFlags, type MeterProvider } from '@opentelemetry/api';
import { parseTraceParent } from '@opentelemetry/core';
import { epochNow } from '../batching/clock.js';
import type { StreamscoreConfig } from '../config/schema.js';
import type { InboundRecord, OutboundRecord } from '../kafka/types.js';
import { startModuleThread } from '../util/thread.js';
import type { Logger } from './logger.js';
import type { SpanBuilder } from './span-builder.js';
import { SPAN_ATTRIBUTE } from './span-names.js';
import {
  GROUP_ID_WORDS,
  ID,
  InFlightTraces,
  SpanRecordWriter,
  type GroupSpanRecord,
  type OpenGroup,
  type Outcome,
} from './span-records.js';
import {
  hexToWords,
  IdWordPool,
  isZeroId,
  SPAN_ID_WORDS,
  TRACE_ID_WORDS,
  TraceparentValue,
  wordsToHex,
} from './trace-ids.js';
import type {
  FromTraceThread,
  ProcessorMetricPoint,
  ToTraceThread,
  TraceThreadData,
} from './trace-thread.js';

export { SPAN_ATTRIBUTE } from './span-names.js';

export interface TracingHandle {
  /** The worker's per-request tracing (InferenceWorker's `tracing`). */
  requests: RequestTracing;
  /**
   * Resolves once the tracing thread has loaded the SDK and can take spans, or has failed to start
   * (spans are then counted as dropped), or after 10 s (logged). The service waits for it before it
   * reads records, so the thread's start-up does not compete with the first requests for the CPU.
   */
  ready: Promise<void>;
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
 * at `tracesSampleRatio` (the SDK's TraceIdRatioBased rule on its trace id).
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
    ready: thread.ready,
    flush: () => thread.flush(),
    shutdown: () => thread.shutdown(),
  };
}

/** Tracing's run-time state (GET /tracing). */
export interface TracingState {
  /** Tracing was started (telemetry.otlpEndpoint set, a sample ratio > 0). */
  configured: boolean;
  /** Requests read now are traced (false: paused, or not configured). */
  on: boolean;
  /** New traces kept (a request with a traceparent follows its producer); 0 if not configured. */
  sampleRatio: number;
  /** Requests whose spans have started and not ended. */
  inFlight: number;
}

/** A sample ratio set at run time: a number > 0 and ≤ 1; RangeError naming `given` otherwise. */
export function checkedSampleRatio(value: number, given: string = String(value)): number {
  if (!(value > 0 && value <= 1)) {
    throw new RangeError(`sampleRatio must be a number > 0 and ≤ 1, not ${given}`);
  }
  return value;
}

/** A sample ratio as typed (a query parameter, a CLI flag): checkedSampleRatio of its number. */
export function parseSampleRatio(text: string): number {
  return checkedSampleRatio(text.trim() === '' ? Number.NaN : Number(text), `"${text}"`);
}

/** When records read together were read (RequestTracing.readAt). */
export interface ReadAt {
  /** Epoch ms on the spans' clock (start times). */
  epoch: number;
  /** Date.now(): what producers' record timestamps are compared with (queue wait). */
  wall: number;
}

/** The record's slot in InFlightTraces while it is in flight (InboundRecord.trace), if traced. */
const slotOf = (record: InboundRecord): number | undefined => record.trace as number | undefined;

const SAMPLED = TraceFlags.SAMPLED;

const round = (ms: number): number => Math.round(ms * 100) / 100;

/**
 * The spans of one request's way through the worker, per the OpenTelemetry messaging
 * conventions: a consumer `process <topic>` span whose parent is the producer's context (the
 * record's traceparent), one `infer <model>` span per batch linked to every request in it, and one
 * producer `send <topic>` span per batch of answers handed to the broker, linked to each request.
 * A result's traceparent is its request's process span (the span the result was created in), so
 * consumers of results continue the producer's trace.
 *
 * Per request this notes ids and times only, in a row of InFlightTraces whose number the record
 * holds; the spans are made elsewhere (SpanSink).
 */
export class RequestTracing {
  private readonly traces: InFlightTraces;
  private readonly ids = new IdWordPool();
  /** Send spans waiting for the last of their requests, by the ref their slots hold (setSend). */
  private readonly openSends: (OpenGroup | undefined)[] = [];
  private readonly freeSendRefs: number[] = [];
  /**
   * Each slot's `traceparent` value for results, written over for each request that takes the
   * slot, instead of a Buffer view made per result and kept alive until its acknowledgement. A
   * sink reads a record's Buffers only until it acknowledges it (RecordSink.send); a slot given up
   * while a send may still read its value gets a fresh one (see finish).
   */
  private readonly traceparents: (TraceparentValue | undefined)[] = [];
  /** The sampled slots of one sending() call (reused: a call never outlives itself). */
  private linked = new Int32Array(256);
  /**
   * A request that starts a trace is kept when its trace id hashes below this (the SDK's
   * TraceIdRatioBased bound); none at 100 %: every one is kept.
   */
  private newTracesBelow: number | undefined;
  private sampleRatio: number;
  /** Paused (pause()): requests read now are not traced at all; those in flight finish. */
  private paused = false;

  constructor(
    private readonly spans: SpanSink,
    sampleRatio: number,
    /** Requests in flight the table starts with room for (it grows as needed). */
    initialCapacity?: number,
  ) {
    this.traces = new InFlightTraces(initialCapacity);
    this.sampleRatio = sampleRatio;
    this.newTracesBelow = RequestTracing.boundOf(sampleRatio);
  }

  private static boundOf(sampleRatio: number): number | undefined {
    return sampleRatio >= 1 ? undefined : Math.floor(Math.max(0, sampleRatio) * 0xffffffff);
  }

  /** Requests whose spans have started and not ended. */
  get inFlight(): number {
    return this.traces.live;
  }

  /** What GET /tracing answers. */
  get state(): TracingState {
    return {
      configured: true,
      on: !this.paused,
      sampleRatio: this.sampleRatio,
      inFlight: this.traces.live,
    };
  }

  /**
   * Stops tracing requests read from now on, as if tracing were off: no spans, no ids, no
   * `traceparent` on their results (a dead letter still keeps the request's headers). Requests
   * already traced finish their spans. The tracing thread stays up, idle, for resume().
   */
  pause(): void {
    this.paused = true;
  }

  /**
   * Traces requests read from now on again, keeping new traces at `sampleRatio` (0 < r ≤ 1) when
   * given, else at the ratio they were kept at before. A request with a traceparent follows its
   * producer's decision, as always.
   */
  resume(sampleRatio?: number): void {
    if (sampleRatio !== undefined) {
      this.sampleRatio = checkedSampleRatio(sampleRatio);
      this.newTracesBelow = RequestTracing.boundOf(sampleRatio);
    }
    this.paused = false;
  }

  /**
   * The SDK's TraceIdRatioBased decision, on the words: its hash of a trace id is the XOR of the
   * id's four 8-digit hex parts, which are the words (test/telemetry/request-tracing.test.ts holds
   * the two to the same decisions).
   */
  private keepsNewTrace(words: Int32Array, at: number): boolean {
    if (this.newTracesBelow === undefined) return true;
    const hash = (words[at]! ^ words[at + 1]! ^ words[at + 2]! ^ words[at + 3]!) >>> 0;
    return hash < this.newTracesBelow;
  }

  /**
   * When records read together were read: one clock reading for all of them (`received`), as
   * they came in one fetch.
   */
  readAt(): ReadAt {
    return { epoch: epochNow(), wall: Date.now() };
  }

  /** The time to end spans with (`answered`): one reading for answers acknowledged together. */
  now(): number {
    return epochNow();
  }

  /** The request was read: its process span starts, as a child of the producer's span. */
  received(record: InboundRecord, readAt: ReadAt = this.readAt()): void {
    if (this.paused) return;
    const header = record.headers['traceparent'];
    let parent = header ? parseTraceParent(header.toString('latin1')) : null;
    const traceState = parent ? (record.headers['tracestate']?.toString('latin1') ?? '') : '';
    const traces = this.traces;
    const slot = traces.open(
      record.topic,
      record.partition,
      Number(record.offset),
      readAt.epoch,
      // The producer's timestamp is wall-clock time.
      Math.max(0, readAt.wall - record.timestamp),
      traceState,
    );
    const ids = traces.ids;
    const at = traces.idsAt(slot);
    if (parent) {
      hexToWords(parent.traceId, ids, at + ID.trace, TRACE_ID_WORDS);
      hexToWords(parent.spanId, ids, at + ID.parent, SPAN_ID_WORDS);
      // An all-zero id is invalid (W3C): the request starts a trace of its own, as the SDK would.
      if (
        isZeroId(ids, at + ID.trace, TRACE_ID_WORDS) ||
        isZeroId(ids, at + ID.parent, SPAN_ID_WORDS)
      ) {
        parent = null;
        ids.fill(0, at, at + ID.batch);
        traces.traceStates[slot] = '';
      }
    }
    if (parent) this.ids.draw(ids, at + ID.span, SPAN_ID_WORDS);
    else this.ids.drawTraceAndSpan(ids, at + ID.trace);
    const sampled = parent ? (parent.traceFlags & SAMPLED) !== 0 : this.keepsNewTrace(ids, at);
    if (!sampled) traces.setSampled(slot, false);
    record.trace = slot;
  }

  /** The record's span context, for log lines about it. */
  logFields(record: InboundRecord): { trace_id: string; span_id: string } | Record<string, never> {
    const slot = slotOf(record);
    if (slot === undefined) return {};
    const at = this.traces.idsAt(slot);
    return {
      trace_id: wordsToHex(this.traces.ids, at + ID.trace, TRACE_ID_WORDS),
      span_id: wordsToHex(this.traces.ids, at + ID.span, SPAN_ID_WORDS),
    };
  }

  /** The request id is known once decoded. */
  identified(record: InboundRecord, requestId: string): void {
    const slot = slotOf(record);
    if (slot !== undefined) this.traces.requestIds[slot] = requestId;
  }

  /** One model call for these requests: a batch span linked to each request's span. */
  batch(
    records: readonly InboundRecord[],
    model: { name: string; version: string; backend: string },
    startedAt: number,
    receivedAt: readonly number[],
  ): (inferredAt: number, error?: Error) => void {
    const traces = this.traces;
    // Slots and their generations, not the records: a slot whose generation changed by the time
    // the model returns was given up meanwhile (and maybe reused) and is left out.
    let slots: Int32Array | undefined;
    let generations: Int32Array | undefined;
    let count = 0;
    for (let i = 0; i < records.length; i++) {
      const slot = slotOf(records[i]!);
      if (slot === undefined || !traces.sampled(slot)) continue;
      // Known now: the wait ends as the batch starts.
      traces.setBatchWait(slot, round(startedAt - receivedAt[i]!));
      if (!slots) {
        slots = new Int32Array(records.length - i);
        generations = new Int32Array(records.length - i);
      }
      slots[count] = slot;
      generations![count++] = traces.generations[slot]!;
    }
    if (count === 0) return noop;
    const ids = new Int32Array(GROUP_ID_WORDS);
    this.ids.drawTraceAndSpan(ids, 0);
    const start = epochNow();
    return (inferredAt, error) => {
      const inferenceMs = round(inferredAt - startedAt);
      const links = new Int32Array(count * GROUP_ID_WORDS);
      const current = traces.generations;
      let linked = 0;
      for (let k = 0; k < count; k++) {
        const slot = slots![k]!;
        if (current[slot] !== generations![k]) continue;
        traces.setInference(slot, ids, TRACE_ID_WORDS, inferenceMs);
        traces.copyLink(slot, links, linked++ * GROUP_ID_WORDS);
      }
      this.spans.group({
        kind: 'infer',
        name: `infer ${model.name}`,
        ids,
        start,
        end: epochNow(),
        attributes: {
          [SPAN_ATTRIBUTE.model]: model.name,
          [SPAN_ATTRIBUTE.modelVersion]: model.version,
          [SPAN_ATTRIBUTE.backend]: model.backend,
          [SPAN_ATTRIBUTE.batchSize]: records.length,
        },
        links: linked === count ? links : links.slice(0, linked * GROUP_ID_WORDS),
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
    const onlyResultTopic = typeof resultTopics === 'string' ? resultTopics : undefined;
    const traces = this.traces;
    if (this.linked.length < records.length) this.linked = new Int32Array(records.length);
    const linked = this.linked;
    let count = 0;
    let topic: string | undefined;
    let mixed = false;
    for (let i = 0; i < records.length; i++) {
      const slot = slotOf(records[i]!);
      const out = outs[i];
      if (slot === undefined || !out) continue;
      const sampled = traces.sampled(slot);
      const isResult =
        onlyResultTopic !== undefined
          ? out.topic === onlyResultTopic
          : (resultTopics as ReadonlySet<string>).has(out.topic);
      if (isResult) {
        out.headers['traceparent'] = this.traceparentOf(slot, sampled);
        const traceState = traces.traceStates[slot]!;
        if (traceState) out.headers['tracestate'] = traceState;
      }
      if (!sampled) continue;
      linked[count++] = slot;
      if (topic === undefined) topic = out.topic;
      else if (topic !== out.topic) mixed = true;
    }
    if (count === 0) return;
    const ids = new Int32Array(GROUP_ID_WORDS);
    this.ids.drawTraceAndSpan(ids, 0);
    const links = new Int32Array(count * GROUP_ID_WORDS);
    for (let k = 0; k < count; k++) traces.copyLink(linked[k]!, links, k * GROUP_ID_WORDS);
    // Answers of one batch mostly share a topic; a mix (results and dead letters) names none.
    const single = mixed ? undefined : topic;
    const start = epochNow();
    const send: OpenGroup = {
      kind: 'send',
      name: single ? `send ${single}` : 'send',
      ids,
      start,
      end: Number.NaN,
      attributes: {
        'messaging.system': 'kafka',
        'messaging.operation.type': 'send',
        'messaging.batch.message_count': count,
        ...(single ? { 'messaging.destination.name': single } : {}),
      },
      links,
      error: '',
      open: count,
    };
    const ref = this.freeSendRefs.pop() ?? this.openSends.length;
    this.openSends[ref] = send;
    for (let k = 0; k < count; k++) {
      const slot = linked[k]!;
      // Sent again before it was answered: the earlier send no longer waits for it.
      const earlier = traces.sendOf(slot);
      if (earlier >= 0) this.sendEnded(earlier, start);
      traces.setSend(slot, ref);
    }
  }

  /** The slot's traceparent value, written for the request it holds now. */
  private traceparentOf(slot: number, sampled: boolean): Buffer {
    const at = this.traces.idsAt(slot);
    const value = (this.traceparents[slot] ??= new TraceparentValue());
    return value.write(this.traces.ids, at + ID.trace, at + ID.span, sampled);
  }

  /** One of the send's requests is done; the last one ends the span at `at`. */
  private sendEnded(ref: number, at: number): void {
    const send = this.openSends[ref];
    if (!send || --send.open > 0) return;
    send.end = at;
    this.spans.group(send);
    this.openSends[ref] = undefined;
    this.freeSendRefs.push(ref);
  }

  /**
   * The answer is acknowledged (or committed): the request's spans end, at `at` (`now()`) when
   * given.
   */
  answered(
    record: InboundRecord,
    outcome: 'result' | 'dead-letter',
    errorCode = '',
    at?: number,
  ): void {
    this.finish(record, outcome, errorCode, '', at);
  }

  /** Not answered by this worker after all (partition lost, transaction failed, shutdown). */
  abandoned(record: InboundRecord, reason: string): void {
    this.finish(record, 'abandoned', '', reason, undefined);
  }

  private finish(
    record: InboundRecord,
    outcome: Outcome,
    errorCode: string,
    abandonReason: string,
    at: number | undefined,
  ): void {
    const slot = slotOf(record);
    if (slot === undefined) return;
    record.trace = undefined;
    const traces = this.traces;
    if (traces.sampled(slot)) {
      const end = at ?? epochNow();
      // The row is copied now: the slot is reused once closed.
      this.spans.room().addInFlight(traces, slot, end, outcome, errorCode, abandonReason);
      this.spans.added();
      const ref = traces.sendOf(slot);
      if (ref >= 0) this.sendEnded(ref, end);
    }
    // Given up: a send that is still under way (a transaction being dropped, a send abandoned at
    // shutdown) may read this value yet, so the slot's next request must not write over it.
    if (outcome === 'abandoned') this.traceparents[slot] = undefined;
    traces.close(slot);
  }
}

const noop = (): void => undefined;

/**
 * Where finished span records go (the tracing thread, or a builder on this thread): a
 * SpanRecordWriter, and when to take what it holds.
 */
export abstract class SpanSink {
  protected abstract readonly writer: SpanRecordWriter;

  /** The writer, with room for one more request record; call `added` after adding it. */
  room(): SpanRecordWriter {
    return this.writer;
  }

  /** Called after each record is added. */
  abstract added(): void;

  group(record: GroupSpanRecord): void {
    this.writer.addGroup(record);
    this.added();
  }
}

/** The longest the worker waits for the tracing thread before it reads records anyway. */
const READY_TIMEOUT_MS = 10_000;

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
class TraceThread extends SpanSink {
  protected readonly writer: SpanRecordWriter;
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
  private markReady: () => void = () => undefined;
  /** The first thread is up, or gone, or READY_TIMEOUT_MS passed (logged): nothing to wait for. */
  readonly ready = new Promise<void>((resolve) => (this.markReady = resolve));

  constructor(
    private readonly data: TraceThreadData,
    private readonly log: Logger,
    meterProvider: MeterProvider | undefined,
  ) {
    super();
    this.writer = new SpanRecordWriter(Math.min(HANDOFF_SPANS, Math.floor(data.queueSize / 4)));
    this.worker = this.spawn();
    const late = setTimeout(() => {
      log.warn(
        { waitedMs: READY_TIMEOUT_MS },
        'tracing thread not ready yet; reading records without waiting for it',
      );
      this.markReady();
    }, READY_TIMEOUT_MS).unref();
    void this.ready.then(() => clearTimeout(late));
    if (meterProvider) this.mirrorMetrics(meterProvider);
  }

  override room(): SpanRecordWriter {
    if (this.writer.full) this.handOff();
    return this.writer;
  }

  added(): void {
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
    // The columns move to the thread (no copy); the writer has fresh ones already.
    this.worker.postMessage({ type: 'spans', records } satisfies ToTraceThread, [
      records.numbers.buffer as ArrayBuffer,
      records.ids.buffer as ArrayBuffer,
      records.texts.buffer as ArrayBuffer,
      records.text.buffer as ArrayBuffer,
    ]);
  }

  private spawn(): Worker {
    const worker = startModuleThread(import.meta.url, 'trace-thread', { workerData: this.data });
    // The thread never keeps the process alive; shutdown() waits for it explicitly.
    worker.unref();
    worker.on('message', (message: FromTraceThread) => {
      if (message.type === 'ready') {
        this.markReady();
      } else if (message.type === 'built') {
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
      this.markReady();
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
export class LocalSpanSink extends SpanSink {
  protected readonly writer = new SpanRecordWriter(1);

  constructor(private readonly builder: SpanBuilder) {
    super();
  }

  added(): void {
    this.builder.build(this.writer.take());
  }
}
