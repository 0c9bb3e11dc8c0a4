/**
 * Finished spans as plain records: what the worker's main thread hands to the thread that makes
 * and exports the OpenTelemetry spans (trace-thread.ts).
 *
 * Why records and not SDK spans: at tens of thousands of requests a second, making, holding and
 * serialising one SDK span per request on the main thread cost it a third to a half of its
 * throughput (`npm run bench:tracing`). The main thread now only notes ids and times; request
 * records travel in columns (a Float64Array moved, not copied, and one array of strings), so
 * handing over a thousand of them is one cheap postMessage.
 */

/** How a request's span ended. */
export const OUTCOMES = ['result', 'dead-letter', 'abandoned'] as const;
export type Outcome = (typeof OUTCOMES)[number];

/** One request's `process` span. Times are epoch milliseconds (fractional); NaN: not measured. */
export interface RequestSpanRecord {
  topic: string;
  partition: number;
  offset: number;
  traceId: string;
  spanId: string;
  /** The producer's span from the record's traceparent; '' for a request that starts a trace. */
  parentSpanId: string;
  /** The record's `tracestate` header, carried on unchanged; '' when none. */
  traceState: string;
  start: number;
  end: number;
  queueWaitMs: number;
  batchWaitMs: number;
  inferenceMs: number;
  /** The request id once decoded; '' when it never was. */
  requestId: string;
  /** The `infer` span of the batch the request was scored in; '' when it was not. */
  batchSpanId: string;
  outcome: Outcome;
  /** The dead letter's error code; '' for a result. */
  errorCode: string;
  /** Why the worker gave the request up (outcome `abandoned`); '' otherwise. */
  abandonReason: string;
}

/** A span for a group of requests (`infer` or `send`): a root span linked to each request. */
export interface GroupSpanRecord {
  kind: 'infer' | 'send';
  name: string;
  traceId: string;
  spanId: string;
  start: number;
  end: number;
  attributes: Record<string, string | number>;
  /** The linked request spans, as trace id, span id, trace id, span id, … */
  links: string[];
  /** Set when the group failed (a model error): the span's error status message. */
  error: string;
}

/** What crosses the thread boundary at once; `numbers.buffer` is transferred. */
export interface SpanRecords {
  count: number;
  numbers: Float64Array;
  strings: string[];
  groups: GroupSpanRecord[];
}

const NUMBERS = 8; // partition, offset, start, end, queue wait, batch wait, inference, outcome
const STRINGS = 9; // topic, trace, span, parent, tracestate, request id, batch span, code, reason

/** Collects finished spans in columns until taken. */
export class SpanRecordWriter {
  private numbers: Float64Array;
  private strings: string[] = [];
  private groups: GroupSpanRecord[] = [];
  private count = 0;

  constructor(private readonly capacity: number) {
    this.numbers = new Float64Array(capacity * NUMBERS);
  }

  /** Request spans and group spans held. */
  get size(): number {
    return this.count + this.groups.length;
  }

  get full(): boolean {
    return this.count >= this.capacity;
  }

  add(r: RequestSpanRecord): void {
    if (this.full) throw new RangeError(`span record writer holds at most ${this.capacity}`);
    const n = this.count++ * NUMBERS;
    const numbers = this.numbers;
    numbers[n] = r.partition;
    numbers[n + 1] = r.offset;
    numbers[n + 2] = r.start;
    numbers[n + 3] = r.end;
    numbers[n + 4] = r.queueWaitMs;
    numbers[n + 5] = r.batchWaitMs;
    numbers[n + 6] = r.inferenceMs;
    numbers[n + 7] = OUTCOMES.indexOf(r.outcome);
    this.strings.push(
      r.topic,
      r.traceId,
      r.spanId,
      r.parentSpanId,
      r.traceState,
      r.requestId,
      r.batchSpanId,
      r.errorCode,
      r.abandonReason,
    );
  }

  addGroup(g: GroupSpanRecord): void {
    this.groups.push(g);
  }

  /** Everything held, as one message; the writer starts empty again. */
  take(): SpanRecords {
    const taken: SpanRecords = {
      count: this.count,
      numbers: this.numbers,
      strings: this.strings,
      groups: this.groups,
    };
    this.numbers = new Float64Array(this.capacity * NUMBERS);
    this.strings = [];
    this.groups = [];
    this.count = 0;
    return taken;
  }
}

/** Calls `visit` with each request record of a message, in the order they were added. */
export function forEachRequestSpan(
  records: SpanRecords,
  visit: (record: RequestSpanRecord) => void,
): void {
  const { numbers, strings } = records;
  for (let i = 0; i < records.count; i++) {
    const n = i * NUMBERS;
    const s = i * STRINGS;
    visit({
      partition: numbers[n]!,
      offset: numbers[n + 1]!,
      start: numbers[n + 2]!,
      end: numbers[n + 3]!,
      queueWaitMs: numbers[n + 4]!,
      batchWaitMs: numbers[n + 5]!,
      inferenceMs: numbers[n + 6]!,
      outcome: OUTCOMES[numbers[n + 7]!]!,
      topic: strings[s]!,
      traceId: strings[s + 1]!,
      spanId: strings[s + 2]!,
      parentSpanId: strings[s + 3]!,
      traceState: strings[s + 4]!,
      requestId: strings[s + 5]!,
      batchSpanId: strings[s + 6]!,
      errorCode: strings[s + 7]!,
      abandonReason: strings[s + 8]!,
    });
  }
}
