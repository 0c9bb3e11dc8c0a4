/**
 * Request tracing state as plain columns: what the worker's main thread keeps per request in
 * flight (InFlightTraces) and what it hands to the thread that makes and exports the
 * OpenTelemetry spans (SpanRecordWriter → SpanRecords → trace-thread.ts).
 *
 * Why columns and not objects: at tens of thousands of requests a second, one SDK span per
 * request on the main thread cost it a third to a half of its throughput, and even a small object
 * with hex-string ids per request in flight was copied by every young-generation GC while the
 * request waited for its batch and its acknowledgement (`npm run bench:tracing`, `npm run bench`).
 * Here a request in flight is a slot number; ids are 32-bit words (trace-ids.ts); finished
 * requests travel in typed arrays that are moved, not copied, and their request ids as one array
 * of strings, so handing over a thousand of them is one cheap postMessage.
 */
import { hexToWords, SPAN_ID_WORDS, TRACE_ID_WORDS, wordsToHex } from './trace-ids.js';

/** How a request's span ended. */
export const OUTCOMES = ['result', 'dead-letter', 'abandoned'] as const;
export type Outcome = (typeof OUTCOMES)[number];

/**
 * One request's `process` span, with hex ids: how tests and other readers see a record.
 * Times are epoch milliseconds (fractional); NaN: not measured.
 */
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

/** Where each id sits in a row of id words (in flight and handed over alike). */
export const ID = {
  trace: 0,
  span: TRACE_ID_WORDS,
  /** Zero words: no parent (the request started its trace). */
  parent: TRACE_ID_WORDS + SPAN_ID_WORDS,
  /** Zero words: not scored in a batch. */
  batch: TRACE_ID_WORDS + 2 * SPAN_ID_WORDS,
} as const;
/** Id words per request: trace, span, parent span, batch span. */
export const ID_WORDS = TRACE_ID_WORDS + 3 * SPAN_ID_WORDS;

/** A group's own ids: trace id then span id. */
export const GROUP_ID_WORDS = TRACE_ID_WORDS + SPAN_ID_WORDS;

/** A span for a group of requests (`infer` or `send`): a root span linked to each request. */
export interface GroupSpanRecord {
  kind: 'infer' | 'send';
  name: string;
  /** Trace id and span id (GROUP_ID_WORDS words). */
  ids: Int32Array;
  start: number;
  end: number;
  attributes: Record<string, string | number>;
  /** The linked request spans: trace id and span id, GROUP_ID_WORDS words per link. */
  links: Int32Array;
  /** Set when the group failed (a model error): the span's error status message. */
  error: string;
}

/** What crosses the thread boundary at once; the typed arrays' buffers are transferred. */
export interface SpanRecords {
  count: number;
  /** Per request, NUMBERS values (see N). */
  numbers: Float64Array;
  /** Per request, ID_WORDS words (see ID). */
  ids: Int32Array;
  /**
   * Per request, its request id ('' when never decoded). Strings, cloned by postMessage in C++:
   * written into `text` here they cost the worker's event loop a loop per character.
   */
  requestIds: string[];
  /** Per request, where each of its TEXTS strings (see S) sits in `text`: start, UTF-8 length. */
  texts: Int32Array;
  /** The rarer strings, UTF-8: the bytes are what is written. */
  text: Uint8Array;
  /** Topics, by the index in N.topic. */
  topics: string[];
  groups: GroupSpanRecord[];
}

/** Where each number sits in a request's row of `numbers`. */
export const N = {
  partition: 0,
  offset: 1,
  start: 2,
  end: 3,
  queueWait: 4,
  batchWait: 5,
  inference: 6,
  outcome: 7,
  topic: 8,
} as const;
export const NUMBERS = 9;

/**
 * A request's rarer strings (empty for most), in its row of `texts` (two words each: start and
 * length in `text`).
 */
export const S = { traceState: 0, errorCode: 2, abandonReason: 4 } as const;
export const TEXTS = 6;
/** Strings up to this long are written by a loop when ASCII (no call into C++ per string). */
const SHORT_TEXT = 128;
const utf8Encoder = new TextEncoder();
const utf8Decoder = new TextDecoder();

// Rows of InFlightTraces.times.
const T_START = 0;
const T_QUEUE_WAIT = 1;
const T_BATCH_WAIT = 2;
const T_INFERENCE = 3;
const T_OFFSET = 4;
const T_PARTITION = 5;
const TIMES = 6;
/** One more id word in flight: flags (bit 0: sampled) and, above them, the send (see setSend). */
const FLAGS = ID_WORDS;
const WORDS_IN_FLIGHT = ID_WORDS + 1;
const SAMPLED = 1;
const SEND_SHIFT = 1;

/** A group span still waiting for the last of its requests to be answered. */
export interface OpenGroup extends GroupSpanRecord {
  open: number;
}

/**
 * The tracing state of every request in flight, a row per slot; a record holds its slot number
 * (InboundRecord.trace). Slots are reused once their request is answered or given up, so the
 * table grows to the most requests ever in flight at once and stays there.
 */
export class InFlightTraces {
  times: Float64Array;
  /** ID_WORDS id words and a flags word per slot. */
  ids: Int32Array;
  readonly topics: string[] = [];
  readonly requestIds: string[] = [];
  readonly traceStates: string[] = [];
  /**
   * Bumped each time a slot is closed: a batch that noted (slot, generation) knows whether the
   * slot still holds the same request when the model returns.
   */
  generations: Int32Array;
  /**
   * Free slots, a ring taken from at `freeHead`: first freed, first taken again. Requests are
   * mostly answered in the order they were read, so slots are taken again in about the order they
   * were first taken and the rows of requests read (and batched, and answered) together lie
   * together; a stack of free slots scatters them over a table of thousands.
   */
  private free: Int32Array;
  private freeHead = 0;
  private freeCount: number;
  private capacity: number;

  constructor(initialCapacity = 1024) {
    this.capacity = initialCapacity;
    this.times = new Float64Array(initialCapacity * TIMES);
    this.ids = new Int32Array(initialCapacity * WORDS_IN_FLIGHT);
    this.generations = new Int32Array(initialCapacity);
    this.free = new Int32Array(initialCapacity);
    for (let i = 0; i < initialCapacity; i++) this.free[i] = i;
    this.freeCount = initialCapacity;
  }

  /** Requests in flight. */
  get live(): number {
    return this.capacity - this.freeCount;
  }

  /** A slot for a new request: sampled, its id words zeroed. */
  open(
    topic: string,
    partition: number,
    offset: number,
    start: number,
    queueWaitMs: number,
    traceState: string,
  ): number {
    if (this.freeCount === 0) this.grow();
    const slot = this.free[this.freeHead]!;
    this.freeHead = this.freeHead + 1 === this.capacity ? 0 : this.freeHead + 1;
    this.freeCount--;
    const t = slot * TIMES;
    const times = this.times;
    times[t + T_START] = start;
    times[t + T_QUEUE_WAIT] = queueWaitMs;
    times[t + T_BATCH_WAIT] = Number.NaN;
    times[t + T_INFERENCE] = Number.NaN;
    times[t + T_OFFSET] = offset;
    times[t + T_PARTITION] = partition;
    const w = slot * WORDS_IN_FLIGHT;
    const ids = this.ids;
    // Stores, not ids.fill: a builtin call costs more than ten words.
    for (let k = 0; k < ID_WORDS; k++) ids[w + k] = 0;
    ids[w + FLAGS] = SAMPLED;
    this.topics[slot] = topic;
    this.requestIds[slot] = '';
    this.traceStates[slot] = traceState;
    return slot;
  }

  /** The slot is free again; the strings it held are let go. */
  close(slot: number): void {
    this.requestIds[slot] = '';
    this.traceStates[slot] = '';
    this.generations[slot] = (this.generations[slot]! + 1) | 0;
    let tail = this.freeHead + this.freeCount;
    if (tail >= this.capacity) tail -= this.capacity;
    this.free[tail] = slot;
    this.freeCount++;
  }

  /** Where the slot's id words start in `ids` (add ID.*). */
  idsAt(slot: number): number {
    return slot * WORDS_IN_FLIGHT;
  }

  sampled(slot: number): boolean {
    return (this.ids[slot * WORDS_IN_FLIGHT + FLAGS]! & SAMPLED) !== 0;
  }

  setSampled(slot: number, sampled: boolean): void {
    const w = slot * WORDS_IN_FLIGHT + FLAGS;
    this.ids[w] = sampled ? this.ids[w]! | SAMPLED : this.ids[w]! & ~SAMPLED;
  }

  /**
   * The answer went out with the send span that the caller keeps at `ref` (≥ 0), as a number so
   * that the slot holds no object.
   */
  setSend(slot: number, ref: number): void {
    const w = slot * WORDS_IN_FLIGHT + FLAGS;
    this.ids[w] = (this.ids[w]! & SAMPLED) | ((ref + 1) << SEND_SHIFT);
  }

  /** The send span's `ref` given to setSend; -1: none. */
  sendOf(slot: number): number {
    return (this.ids[slot * WORDS_IN_FLIGHT + FLAGS]! >>> SEND_SHIFT) - 1;
  }

  /** The wait ends as the batch starts. */
  setBatchWait(slot: number, ms: number): void {
    this.times[slot * TIMES + T_BATCH_WAIT] = ms;
  }

  /** Scored in the batch whose span id is `batchIds[at…]`, taking `ms`. */
  setInference(slot: number, batchIds: Int32Array, at: number, ms: number): void {
    this.times[slot * TIMES + T_INFERENCE] = ms;
    const w = slot * WORDS_IN_FLIGHT + ID.batch;
    this.ids[w] = batchIds[at]!;
    this.ids[w + 1] = batchIds[at + 1]!;
  }

  /** Copies the slot's trace id and span id (a link) to `out` at `at`. */
  copyLink(slot: number, out: Int32Array, at: number): void {
    const w = slot * WORDS_IN_FLIGHT;
    const ids = this.ids;
    for (let k = 0; k < GROUP_ID_WORDS; k++) out[at + k] = ids[w + k]!;
  }

  private grow(): void {
    const old = this.capacity;
    const capacity = old * 2;
    const times = new Float64Array(capacity * TIMES);
    times.set(this.times);
    const ids = new Int32Array(capacity * WORDS_IN_FLIGHT);
    ids.set(this.ids);
    const generations = new Int32Array(capacity);
    generations.set(this.generations);
    // Every slot is taken (it grows only then): the free ring holds the new ones, in order.
    const free = new Int32Array(capacity);
    for (let i = 0; i < capacity - old; i++) free[i] = old + i;
    this.freeHead = 0;
    this.times = times;
    this.ids = ids;
    this.generations = generations;
    this.free = free;
    this.freeCount = capacity - old;
    this.capacity = capacity;
  }

  /** For the writer: the slot's numbers. */
  readTimes(slot: number, out: Float64Array, at: number): void {
    const t = slot * TIMES;
    const times = this.times;
    out[at + N.partition] = times[t + T_PARTITION]!;
    out[at + N.offset] = times[t + T_OFFSET]!;
    out[at + N.start] = times[t + T_START]!;
    out[at + N.queueWait] = times[t + T_QUEUE_WAIT]!;
    out[at + N.batchWait] = times[t + T_BATCH_WAIT]!;
    out[at + N.inference] = times[t + T_INFERENCE]!;
  }
}

/** Collects finished spans in columns until taken. */
export class SpanRecordWriter {
  private numbers: Float64Array;
  private ids: Int32Array;
  private requestIds: string[] = [];
  private texts: Int32Array;
  private text: Uint8Array;
  private textLength = 0;
  private topics: string[] = [];
  private topicIndex = new Map<string, number>();
  private lastTopic = '';
  private lastTopicIndex = -1;
  private groups: GroupSpanRecord[] = [];
  private count = 0;

  constructor(private readonly capacity: number) {
    this.numbers = new Float64Array(capacity * NUMBERS);
    this.ids = new Int32Array(capacity * ID_WORDS);
    this.texts = new Int32Array(capacity * TEXTS);
    // The rarer strings only (trace states, error codes, reasons): most requests have none. It
    // grows when they do (growText), and a hand-over's fresh one keeps the grown size.
    this.text = new Uint8Array(capacity * 8);
  }

  /** Request spans and group spans held. */
  get size(): number {
    return this.count + this.groups.length;
  }

  get full(): boolean {
    return this.count >= this.capacity;
  }

  /** A request of `table` ended: its row is copied now (the slot may be reused after). */
  addInFlight(
    table: InFlightTraces,
    slot: number,
    end: number,
    outcome: Outcome,
    errorCode: string,
    abandonReason: string,
  ): void {
    const i = this.row();
    const n = i * NUMBERS;
    table.readTimes(slot, this.numbers, n);
    this.numbers[n + N.end] = end;
    this.numbers[n + N.outcome] = OUTCOMES.indexOf(outcome);
    this.numbers[n + N.topic] = this.topicOf(table.topics[slot]!);
    const from = table.idsAt(slot);
    const ids = this.ids;
    const tableIds = table.ids;
    const d = i * ID_WORDS;
    for (let k = 0; k < ID_WORDS; k++) ids[d + k] = tableIds[from + k]!;
    this.requestIds.push(table.requestIds[slot]!);
    const t = i * TEXTS;
    this.putText(t + S.traceState, table.traceStates[slot]!);
    this.putText(t + S.errorCode, errorCode);
    this.putText(t + S.abandonReason, abandonReason);
  }

  /** A request span given whole, with hex ids (tests, and callers that hold such records). */
  add(r: RequestSpanRecord): void {
    const i = this.row();
    const n = i * NUMBERS;
    const numbers = this.numbers;
    numbers[n + N.partition] = r.partition;
    numbers[n + N.offset] = r.offset;
    numbers[n + N.start] = r.start;
    numbers[n + N.end] = r.end;
    numbers[n + N.queueWait] = r.queueWaitMs;
    numbers[n + N.batchWait] = r.batchWaitMs;
    numbers[n + N.inference] = r.inferenceMs;
    numbers[n + N.outcome] = OUTCOMES.indexOf(r.outcome);
    numbers[n + N.topic] = this.topicOf(r.topic);
    const d = i * ID_WORDS;
    hexToWords(r.traceId, this.ids, d + ID.trace, TRACE_ID_WORDS);
    hexToWords(r.spanId, this.ids, d + ID.span, SPAN_ID_WORDS);
    hexToWords(r.parentSpanId, this.ids, d + ID.parent, SPAN_ID_WORDS);
    hexToWords(r.batchSpanId, this.ids, d + ID.batch, SPAN_ID_WORDS);
    this.requestIds.push(r.requestId);
    const t = i * TEXTS;
    this.putText(t + S.traceState, r.traceState);
    this.putText(t + S.errorCode, r.errorCode);
    this.putText(t + S.abandonReason, r.abandonReason);
  }

  addGroup(g: GroupSpanRecord): void {
    this.groups.push(g);
  }

  /** Everything held, as one message; the writer starts empty again. */
  take(): SpanRecords {
    const taken: SpanRecords = {
      count: this.count,
      numbers: this.numbers,
      ids: this.ids,
      requestIds: this.requestIds,
      texts: this.texts,
      text: this.text,
      topics: this.topics,
      groups: this.groups,
    };
    this.requestIds = [];
    this.numbers = new Float64Array(this.capacity * NUMBERS);
    this.ids = new Int32Array(this.capacity * ID_WORDS);
    this.texts = new Int32Array(this.capacity * TEXTS);
    this.text = new Uint8Array(this.text.length);
    this.textLength = 0;
    this.topics = [];
    this.topicIndex = new Map();
    this.lastTopic = '';
    this.lastTopicIndex = -1;
    this.groups = [];
    this.count = 0;
    return taken;
  }

  /** Writes `s` as UTF-8 to `text` and notes where (in `texts` at `t`); '' takes no bytes. */
  private putText(t: number, s: string): void {
    const n = s.length;
    if (n === 0) return; // texts start zeroed: start 0, length 0
    if (this.textLength + 3 * n > this.text.length) this.growText(3 * n);
    const text = this.text;
    const at = this.textLength;
    let length = n;
    let ascii = n <= SHORT_TEXT;
    for (let k = 0; ascii && k < n; k++) {
      const c = s.charCodeAt(k);
      if (c < 0x80) text[at + k] = c;
      else ascii = false;
    }
    if (!ascii) length = utf8Encoder.encodeInto(s, text.subarray(at)).written;
    this.texts[t] = at;
    this.texts[t + 1] = length;
    this.textLength = at + length;
  }

  private growText(atLeast: number): void {
    let size = this.text.length * 2;
    while (size < this.textLength + atLeast) size *= 2;
    const grown = new Uint8Array(size);
    grown.set(this.text.subarray(0, this.textLength));
    this.text = grown;
  }

  private row(): number {
    if (this.full) throw new RangeError(`span record writer holds at most ${this.capacity}`);
    return this.count++;
  }

  /** The topic's index in this message (a batch's requests mostly share one topic). */
  private topicOf(topic: string): number {
    if (topic === this.lastTopic && this.lastTopicIndex >= 0) return this.lastTopicIndex;
    let index = this.topicIndex.get(topic);
    if (index === undefined) {
      index = this.topics.push(topic) - 1;
      this.topicIndex.set(topic, index);
    }
    this.lastTopic = topic;
    this.lastTopicIndex = index;
    return index;
  }
}

/** Request `i` of a message as a record with hex ids. */
export function readRequestSpan(records: SpanRecords, i: number): RequestSpanRecord {
  const { numbers, ids } = records;
  const n = i * NUMBERS;
  const d = i * ID_WORDS;
  const t = i * TEXTS;
  const hexOrEmpty = (at: number): string =>
    ids[at] === 0 && ids[at + 1] === 0 ? '' : wordsToHex(ids, at, SPAN_ID_WORDS);
  return {
    topic: records.topics[numbers[n + N.topic]!]!,
    partition: numbers[n + N.partition]!,
    offset: numbers[n + N.offset]!,
    traceId: wordsToHex(ids, d + ID.trace, TRACE_ID_WORDS),
    spanId: wordsToHex(ids, d + ID.span, SPAN_ID_WORDS),
    parentSpanId: hexOrEmpty(d + ID.parent),
    traceState: textOf(records, t + S.traceState),
    start: numbers[n + N.start]!,
    end: numbers[n + N.end]!,
    queueWaitMs: numbers[n + N.queueWait]!,
    batchWaitMs: numbers[n + N.batchWait]!,
    inferenceMs: numbers[n + N.inference]!,
    requestId: records.requestIds[i] ?? '',
    batchSpanId: hexOrEmpty(d + ID.batch),
    outcome: OUTCOMES[numbers[n + N.outcome]!]!,
    errorCode: textOf(records, t + S.errorCode),
    abandonReason: textOf(records, t + S.abandonReason),
  };
}

/** The string at `t` of a message's `texts` ('' when none). */
export function textOf(records: SpanRecords, t: number): string {
  const length = records.texts[t + 1]!;
  if (length === 0) return '';
  const at = records.texts[t]!;
  return utf8Decoder.decode(records.text.subarray(at, at + length));
}
