/**
 * OTLP/protobuf for the tracing thread's exporter: the same bytes as the SDK's
 * `ProtobufTraceSerializer`, written straight from the request records.
 *
 * Why not only the SDK's: at 100 % sampling it was ~7 of the ~10 µs the tracing thread spends per
 * request (`npm run bench:tracing` with serialisation stubbed out), because it re-encodes, twice
 * (a size pass and a write pass), keys and values that are the same on every span (eight of a
 * request span's eleven attributes), and decodes each hex id into a fresh array. Here what repeats
 * is encoded once and copied; what varies is written once. Anything this encoder does not know
 * (another kind of span, an attribute value that is not a string, number or boolean, a schema
 * URL) goes to the SDK's serializer, whole. `test/telemetry/otlp-trace-serializer.test.ts` holds
 * the two to the same bytes.
 */
import {
  SpanKind,
  type Attributes,
  type AttributeValue,
  type SpanContext,
} from '@opentelemetry/api';
import type { InstrumentationScope } from '@opentelemetry/core';
import {
  ProtobufTraceSerializer,
  type IExportTraceServiceResponse,
  type ISerializer,
} from '@opentelemetry/otlp-transformer';
import type { Resource } from '@opentelemetry/resources';
import type { ReadableSpan } from '@opentelemetry/sdk-trace';
import { GroupSpan, RequestSpan } from '../span-builder.js';
import { SPAN_ATTRIBUTE } from '../span-names.js';
import {
  GROUP_ID_WORDS,
  ID,
  ID_WORDS,
  N,
  NUMBERS,
  OUTCOMES,
  S,
  TEXTS,
  textOf,
  type SpanRecords,
} from '../span-records.js';
import { SPAN_ID_WORDS, TRACE_ID_WORDS, writeHexWords } from '../trace-ids.js';
import {
  ProtoWriter,
  putBytes,
  putIdBytes,
  putMillis,
  putVarint,
  utf8,
  utf8Length,
  varintSize,
} from './proto-writer.js';

// Field keys (field number << 3 | wire type) of the OTLP messages written here.
const KEY = {
  resourceSpans: 0x0a, // ExportTraceServiceRequest.resource_spans
  resource: 0x0a, // ResourceSpans.resource
  scopeSpans: 0x12, // ResourceSpans.scope_spans
  scope: 0x0a, // ScopeSpans.scope
  resourceAttribute: 0x0a, // Resource.attributes
  resourceDropped: 0x10, // Resource.dropped_attributes_count, always written
  scopeName: 0x0a,
  scopeVersion: 0x12,
  span: 0x12, // ScopeSpans.spans
  traceId: 0x0a,
  spanId: 0x12,
  traceState: 0x1a,
  parentSpanId: 0x22,
  name: 0x2a,
  kind: 0x30,
  start: 0x39,
  end: 0x41,
  attribute: 0x4a, // Span.attributes
  droppedAttributes: 0x50,
  event: 0x5a,
  droppedEvents: 0x60,
  link: 0x6a,
  droppedLinks: 0x70,
  status: 0x7a,
  eventTime: 0x09,
  eventName: 0x12,
  eventAttribute: 0x1a,
  eventDropped: 0x20,
  linkTraceState: 0x1a,
  linkAttribute: 0x22,
  linkDropped: 0x28,
  linkFlags: 0x35,
  statusMessage: 0x12,
  statusCode: 0x18,
  kvKey: 0x0a,
  kvValue: 0x12,
  stringValue: 0x0a,
  boolValue: 0x10,
  intValue: 0x18,
  doubleValue: 0x21,
} as const;

/** Span.flags (field 16, fixed32): its key takes two bytes. */
const SPAN_FLAGS_KEY = Uint8Array.of(0x85, 0x01);
const HAS_IS_REMOTE = 0x100;
const IS_REMOTE = 0x200;
const SAMPLED_FLAGS = 0x01 | HAS_IS_REMOTE;
const MIN_INT64 = -(2 ** 63);
const MAX_INT64 = 2 ** 63;
/** Export bodies kept for reuse (exports run one at a time but for a flush). */
const FREE_BODIES = 4;
/** Distinct topics, partitions… whose encoded attributes are kept; past this the cache restarts. */
const CACHE_LIMIT = 4096;

function u32le(value: number): number[] {
  return [value & 0xff, (value >>> 8) & 0xff, (value >>> 16) & 0xff, value >>> 24];
}

/** Bytes of an int64 varint. */
function int64Size(value: number): number {
  if (value < 0) return 10;
  if (value <= 0xffffffff) return varintSize(value);
  let size = 5;
  for (let v = Math.floor(value / 2 ** 35); v > 0; v = Math.floor(v / 128)) size++;
  return size;
}

function isInt64(value: number): boolean {
  return Number.isInteger(value) && value >= MIN_INT64 && value < MAX_INT64;
}

/**
 * A KeyValue field: `fieldKey`, length, the key's field (`keyField`), the value. A string's
 * UTF-8 length is measured once, for the lengths and the write.
 */
function writeKeyValue(
  w: ProtoWriter,
  fieldKey: number,
  keyField: Uint8Array,
  value: string | number | boolean,
): void {
  let anySize: number;
  let stringLength = 0;
  if (typeof value === 'string') {
    stringLength = utf8Length(value);
    anySize = 1 + varintSize(stringLength) + stringLength;
  } else if (typeof value === 'boolean') {
    anySize = 2;
  } else {
    anySize = isInt64(value) ? 1 + int64Size(value) : 9;
  }
  w.varint(fieldKey);
  w.varint(keyField.length + 1 + varintSize(anySize) + anySize);
  w.raw(keyField);
  w.varint(KEY.kvValue);
  w.varint(anySize);
  if (typeof value === 'string') {
    w.varint(KEY.stringValue);
    w.string(value, stringLength);
  } else if (typeof value === 'boolean') {
    w.varint(KEY.boolValue);
    w.varint(value ? 1 : 0);
  } else if (isInt64(value)) {
    w.varint(KEY.intValue);
    w.varint(value);
  } else {
    w.varint(KEY.doubleValue);
    w.double(value);
  }
}

/** KeyValue.key with its field key and length, ready to copy. */
function keyField(key: string): Uint8Array {
  return encoded((w) => {
    w.varint(KEY.kvKey);
    w.string(key, utf8Length(key));
  });
}

function encoded(write: (w: ProtoWriter) => void): Uint8Array {
  const w = new ProtoWriter(256);
  write(w);
  return w.take();
}

/** trace_id and span_id (fields 1 and 2 of a Span and of a Span.Link alike) from id words. */
function writeIds(w: ProtoWriter, words: Int32Array, traceAt: number, spanAt: number): void {
  w.varint(KEY.traceId);
  w.idBytes(words, traceAt, TRACE_ID_WORDS);
  w.varint(KEY.spanId);
  w.idBytes(words, spanAt, SPAN_ID_WORDS);
}

const hasId = (words: Int32Array, at: number): boolean => words[at] !== 0 || words[at + 1] !== 0;

/** Bytes written once per object the SDK hands over again and again (a resource, a scope). */
function encodedOnce<K extends object>(
  cache: WeakMap<K, Uint8Array>,
  key: K,
  write: (w: ProtoWriter) => void,
): Uint8Array {
  let bytes = cache.get(key);
  if (!bytes) {
    bytes = encoded(write);
    cache.set(key, bytes);
  }
  return bytes;
}

function isSimple(value: AttributeValue | undefined): value is string | number | boolean {
  const t = typeof value;
  return t === 'string' || t === 'number' || t === 'boolean';
}

function simpleAttributes(attributes: Attributes | undefined): boolean {
  if (!attributes) return true;
  for (const key in attributes) if (!isSimple(attributes[key])) return false;
  return true;
}

const millisScratch = new Float64Array(1);

/**
 * Span times are epoch milliseconds in the records, HrTime in the SDK: the same conversion
 * (`putMillis`, for a group span's or an event's time).
 */
function writeMillis(w: ProtoWriter, epochMillis: number): void {
  millisScratch[0] = epochMillis;
  w.reserve(8);
  w.pos = putMillis(w.dataView, w.pos, millisScratch, 0);
}

/** A bounded memo: what is encoded once for a value that repeats (a topic, a partition). */
class Memo<K, V> {
  private readonly map = new Map<K, V>();

  constructor(private readonly make: (key: K) => V) {}

  get(key: K): V {
    let value = this.map.get(key);
    if (value === undefined) {
      if (this.map.size >= CACHE_LIMIT) this.map.clear();
      value = this.make(key);
      this.map.set(key, value);
    }
    return value;
  }
}

/** Keys of the batch and send spans' attributes (and the resource's), encoded once each. */
const ATTRIBUTE_KEYS = new Memo<string, Uint8Array>(keyField);

function writeAttributes(w: ProtoWriter, fieldKey: number, attributes: Attributes): void {
  for (const key in attributes) {
    writeKeyValue(
      w,
      fieldKey,
      ATTRIBUTE_KEYS.get(key),
      attributes[key] as string | number | boolean,
    );
  }
}

/**
 * A numeric attribute's KeyValue up to its value, encoded once per way the value is written:
 * [0] as a double, [s] as an int64 varint of s bytes (the lengths before the value differ).
 */
function numberPrefixes(key: string): Uint8Array[] {
  const prefixes = [valuePrefix(key, 9, KEY.doubleValue)];
  for (let size = 1; size <= 10; size++) prefixes.push(valuePrefix(key, 1 + size, KEY.intValue));
  return prefixes;
}

/**
 * An attribute's KeyValue up to its value's bytes: the key, then an AnyValue of `anySize` bytes
 * whose field is `valueKey` (and, for a string of a known length, that length).
 */
function valuePrefix(key: string, anySize: number, valueKey: number, stringLength?: number) {
  const keyBytes = keyField(key);
  return encoded((w) => {
    w.varint(KEY.attribute);
    w.varint(keyBytes.length + 1 + varintSize(anySize) + anySize);
    w.raw(keyBytes);
    w.varint(KEY.kvValue);
    w.varint(anySize);
    w.varint(valueKey);
    if (stringLength !== undefined) w.varint(stringLength);
  });
}

/**
 * The `messaging.message.id` attribute: `s` as `length` UTF-8 bytes. Given its UTF-16 length, it
 * writes the string as ASCII and returns -1 at the first character that is not; given its
 * `utf8Length`, it writes any string.
 */
function putMessageId(buf: Uint8Array, pos: number, s: string, length: number): number {
  const anySize = 1 + varintSize(length) + length;
  let p = pos;
  buf[p++] = KEY.attribute;
  p = putVarint(buf, p, MESSAGE_ID_KEY.length + 1 + varintSize(anySize) + anySize);
  p = putBytes(buf, p, MESSAGE_ID_KEY);
  buf[p++] = KEY.kvValue;
  p = putVarint(buf, p, anySize);
  buf[p++] = KEY.stringValue;
  p = putVarint(buf, p, length);
  if (length !== s.length)
    return p + utf8Encoder.encodeInto(s, buf.subarray(p, p + length)).written;
  for (let i = 0; i < length; i++) {
    const c = s.charCodeAt(i);
    if (c >= 0x80) return -1;
    buf[p + i] = c;
  }
  return p + length;
}

const utf8Encoder = new TextEncoder();

/** The longest a numeric attribute with these prefixes takes. */
const numberMax = (prefixes: Uint8Array[]): number =>
  Math.max(...prefixes.map((bytes, size) => bytes.length + (size === 0 ? 8 : size)));

/**
 * The numeric attribute `numbers[i]` (the value is read here, not passed: a fractional number
 * passed to a call that is not inlined is boxed, and this runs several times per span).
 */
function putNumber(
  buf: Uint8Array,
  view: DataView,
  pos: number,
  prefixes: Uint8Array[],
  numbers: Float64Array,
  i: number,
): number {
  const value = numbers[i]!;
  if (isInt64(value)) return putVarint(buf, putBytes(buf, pos, prefixes[int64Size(value)]!), value);
  const p = putBytes(buf, pos, prefixes[0]!);
  view.setFloat64(p, value, true);
  return p + 8;
}

const OFFSET = numberPrefixes('messaging.kafka.offset');
const QUEUE_WAIT = numberPrefixes(SPAN_ATTRIBUTE.queueWaitMs);
const BATCH_WAIT = numberPrefixes(SPAN_ATTRIBUTE.batchWaitMs);
const INFERENCE = numberPrefixes(SPAN_ATTRIBUTE.inferenceMs);
const MESSAGE_ID_KEY = keyField('messaging.message.id');
/** The batch span id attribute up to its 16 hex digits. */
const BATCH_SPAN_PREFIX = valuePrefix(
  SPAN_ATTRIBUTE.batchSpanId,
  2 + 8 * SPAN_ID_WORDS,
  KEY.stringValue,
  8 * SPAN_ID_WORDS,
);
const ERROR_CODE_KEY = keyField(SPAN_ATTRIBUTE.errorCode);
/** What a request span's attributes after the shared ones take at most, less the request id. */
const REQUEST_ATTRIBUTES_MAX =
  numberMax(OFFSET) +
  numberMax(QUEUE_WAIT) +
  numberMax(BATCH_WAIT) +
  numberMax(INFERENCE) +
  MESSAGE_ID_KEY.length +
  18 + // and the request id's KeyValue's three tags and three lengths (5 bytes each at most)
  BATCH_SPAN_PREFIX.length +
  8 * SPAN_ID_WORDS;
const REASON_KEY = keyField('reason');
const ABANDONED = utf8('abandoned');
const UNSET_STATUS = Uint8Array.of(KEY.status, 0x02, KEY.statusCode, 0x00);
/** A link's fields after its ids: no dropped attributes, flags sampled (not remote). */
const LINK_TAIL = Uint8Array.of(KEY.linkDropped, 0x00, KEY.linkFlags, ...u32le(SAMPLED_FLAGS));
/** A link's length: its two ids (with keys and lengths) and LINK_TAIL. */
const LINK_LENGTH = 2 + 4 * TRACE_ID_WORDS + 2 + 4 * SPAN_ID_WORDS + LINK_TAIL.length;
/** OTLP's SpanKind counts UNSPECIFIED as 0: the API's value plus one. */
const CONSUMER_KIND = SpanKind.CONSUMER + 1;

/**
 * A request span's fields after its attributes when it has no error and no event: no dropped
 * attributes, events or links, an unset status, and its flags (sampled; remote parent or not).
 */
const REQUEST_TAIL = [false, true].map((remote) =>
  Uint8Array.of(
    KEY.droppedAttributes,
    0,
    KEY.droppedEvents,
    0,
    KEY.droppedLinks,
    0,
    ...UNSET_STATUS,
    ...SPAN_FLAGS_KEY,
    ...u32le(remote ? SAMPLED_FLAGS | IS_REMOTE : SAMPLED_FLAGS),
  ),
);

/**
 * What the request spans of one consumer group's topic-partition share, encoded once: the name
 * and kind fields, and the six attributes they start with (RequestSpan.attributes's order), the
 * last of which is the outcome: one encoding per outcome.
 */
interface PartitionBytes {
  nameAndKind: Uint8Array;
  attributesByOutcome: Uint8Array[];
  /** The most a span of this partition takes, less its request id, trace state and error. */
  spanMax: number;
}

function partitionBytes(groupId: string, topic: string, partition: number): PartitionBytes {
  const nameAndKind = encoded((w) => {
    const name = `process ${topic}`;
    w.varint(KEY.name);
    w.string(name, utf8Length(name));
    w.varint(KEY.kind);
    w.varint(CONSUMER_KIND);
  });
  const attributesByOutcome = OUTCOMES.map((outcome) =>
    encoded((w) => {
      const attribute = (key: string, value: string) =>
        writeKeyValue(w, KEY.attribute, keyField(key), value);
      attribute('messaging.system', 'kafka');
      attribute('messaging.operation.type', 'process');
      attribute('messaging.destination.name', topic);
      attribute('messaging.destination.partition.id', String(partition));
      attribute('messaging.consumer.group.name', groupId);
      attribute(SPAN_ATTRIBUTE.outcome, outcome);
    }),
  );
  const spanMax =
    4 + // the span's tag and length
    2 * (2 + 4 * TRACE_ID_WORDS) + // trace id, and the span id and parent span id at most
    nameAndKind.length +
    2 * 9 + // start and end
    Math.max(...attributesByOutcome.map((bytes) => bytes.length)) +
    REQUEST_ATTRIBUTES_MAX +
    REQUEST_TAIL[1]!.length;
  return { nameAndKind, attributesByOutcome, spanMax };
}

export class TraceSerializer implements ISerializer<ReadableSpan[], IExportTraceServiceResponse> {
  private readonly writer = new ProtoWriter();
  /** By group id, then topic, then partition. */
  private readonly partitions = new Memo<string, Memo<string, Map<number, PartitionBytes>>>(
    () => new Memo(() => new Map()),
  );
  private last: { groupId: string; topic: string; partition: number; bytes: PartitionBytes } = {
    groupId: '',
    topic: '',
    partition: -1,
    bytes: { nameAndKind: new Uint8Array(0), attributesByOutcome: [], spanMax: 0 },
  };
  private readonly envelopes = new WeakMap<Resource, Uint8Array>();
  private readonly scopes = new WeakMap<InstrumentationScope, Uint8Array>();

  /**
   * Export bodies given back, to be written into again: a fresh buffer of a megabyte per export
   * cost more (its pages are faulted in and later collected) than writing the spans did.
   */
  private readonly freeBodies: Uint8Array[] = [];
  private lent: Uint8Array | undefined;

  /** Spans this serializer wrote itself / handed to the SDK's (for tests and the bench). */
  readonly counts = { encoded: 0, delegated: 0 };

  serializeRequest(spans: ReadableSpan[]): Uint8Array | undefined {
    if (!this.canEncode(spans)) {
      this.counts.delegated += spans.length;
      return ProtobufTraceSerializer.serializeRequest(spans);
    }
    this.counts.encoded += spans.length;
    const w = this.writer;
    const { resource, instrumentationScope: scope } = spans[0]!;
    w.varint(KEY.resourceSpans);
    const resourceSpans = w.begin(4);
    w.raw(this.resourceBytes(resource));
    w.varint(KEY.scopeSpans);
    const scopeSpans = w.begin(4);
    w.raw(this.scopeBytes(scope));
    for (const span of spans) {
      if (span instanceof RequestSpan) this.requestSpan(w, span);
      else this.groupSpan(w, span as GroupSpan);
    }
    w.end(scopeSpans, 4);
    w.end(resourceSpans, 4);
    const body = w.detach(this.freeBodies.pop());
    this.lent = body;
    return body;
  }

  /**
   * The body the last `serializeRequest` wrote, once: its exporter gives it back (`giveBack`)
   * when the export has ended, so the next export is written into it.
   */
  takeLent(): Uint8Array | undefined {
    const body = this.lent;
    this.lent = undefined;
    return body;
  }

  /** An export body no longer read by anyone (its export ended): written into again. */
  giveBack(body: Uint8Array): void {
    if (this.freeBodies.length < FREE_BODIES) {
      const { buffer, byteOffset } = body;
      this.freeBodies.push(new Uint8Array(buffer, byteOffset, buffer.byteLength - byteOffset));
    }
  }

  deserializeResponse(data: Uint8Array): IExportTraceServiceResponse {
    return ProtobufTraceSerializer.deserializeResponse(data);
  }

  /** One resource and scope, spans of streamscore's own kinds, values this encoder writes. */
  private canEncode(spans: ReadableSpan[]): boolean {
    if (spans.length === 0) return false;
    const { resource, instrumentationScope: scope } = spans[0]!;
    if (resource.schemaUrl || scope.schemaUrl || !simpleAttributes(resource.attributes)) {
      return false;
    }
    // A scope may carry attributes at run time that its type does not name; leave those to the SDK.
    const scopeExtras = scope as { attributes?: Attributes; droppedAttributesCount?: number };
    if (scopeExtras.attributes || scopeExtras.droppedAttributesCount) return false;
    for (const span of spans) {
      if (span.resource !== resource || span.instrumentationScope !== scope) return false;
      if (span instanceof RequestSpan) continue;
      if (!(span instanceof GroupSpan) || !simpleAttributes(span.record.attributes)) return false;
    }
    return true;
  }

  private resourceBytes(resource: Resource): Uint8Array {
    return encodedOnce(this.envelopes, resource, (w) => {
      w.varint(KEY.resource);
      const at = w.begin(1);
      writeAttributes(w, KEY.resourceAttribute, resource.attributes);
      w.varint(KEY.resourceDropped);
      w.varint(0);
      w.end(at, 1);
    });
  }

  private scopeBytes(scope: InstrumentationScope): Uint8Array {
    return encodedOnce(this.scopes, scope, (w) => {
      w.varint(KEY.scope);
      const at = w.begin(1);
      w.varint(KEY.scopeName);
      w.string(scope.name, utf8Length(scope.name));
      if (scope.version) {
        w.varint(KEY.scopeVersion);
        w.string(scope.version, utf8Length(scope.version));
      }
      w.end(at, 1);
    });
  }

  /**
   * A request span. It is most of what is exported (one per request), so its common parts are
   * written straight into room reserved once; the rare ones (a trace state, an error, an event)
   * go through the writer's checked calls.
   */
  private requestSpan(w: ProtoWriter, span: RequestSpan): void {
    const { records, index } = span;
    const { numbers, ids, texts } = records;
    const n = index * NUMBERS;
    const d = index * ID_WORDS;
    const t = index * TEXTS;
    const shared = this.partitionBytes(span.shared.groupId, records, n);
    const hasParent = hasId(ids, d + ID.parent);
    const requestId = records.requestIds[index]!;
    // Its UTF-8 bytes, at most: three per UTF-16 unit.
    const requestIdRoom = 3 * requestId.length;
    const rare =
      texts[t + S.traceState + 1]! | texts[t + S.errorCode + 1]! | texts[t + S.abandonReason + 1]!;
    w.reserve(shared.spanMax + requestIdRoom);
    let buf = w.bytes;
    let view = w.dataView;
    let p = w.pos;
    buf[p++] = KEY.span;
    const at = p;
    p += 2; // the length: a span takes 128 bytes to 16 KiB (else moved by `end`)
    buf[p++] = KEY.traceId;
    p = putIdBytes(buf, p, ids, d + ID.trace, TRACE_ID_WORDS);
    buf[p++] = KEY.spanId;
    p = putIdBytes(buf, p, ids, d + ID.span, SPAN_ID_WORDS);
    if (texts[t + S.traceState + 1]) {
      w.pos = p;
      this.traceState(w, KEY.traceState, span.spanContext());
      w.reserve(shared.spanMax + requestIdRoom);
      ({ bytes: buf, dataView: view, pos: p } = w);
    }
    if (hasParent) {
      buf[p++] = KEY.parentSpanId;
      p = putIdBytes(buf, p, ids, d + ID.parent, SPAN_ID_WORDS);
    }
    p = putBytes(buf, p, shared.nameAndKind);
    buf[p++] = KEY.start;
    p = putMillis(view, p, numbers, n + N.start);
    buf[p++] = KEY.end;
    p = putMillis(view, p, numbers, n + N.end);
    // The attributes in RequestSpan.attributes's order.
    p = putBytes(buf, p, shared.attributesByOutcome[numbers[n + N.outcome]!]!);
    p = putNumber(buf, view, p, OFFSET, numbers, n + N.offset);
    p = putNumber(buf, view, p, QUEUE_WAIT, numbers, n + N.queueWait);
    if (requestId.length > 0) {
      // As ASCII (ids mostly are): one pass; written again, measured, if it is not.
      const at = p;
      p = putMessageId(buf, at, requestId, requestId.length);
      if (p < 0) p = putMessageId(buf, at, requestId, utf8Length(requestId));
    }
    if (hasId(ids, d + ID.batch)) {
      p = putBytes(buf, p, BATCH_SPAN_PREFIX);
      p = writeHexWords(buf, p, ids, d + ID.batch, SPAN_ID_WORDS);
      p = putNumber(buf, view, p, BATCH_WAIT, numbers, n + N.batchWait);
      p = putNumber(buf, view, p, INFERENCE, numbers, n + N.inference);
    }
    if (!rare) {
      p = putBytes(buf, p, REQUEST_TAIL[hasParent ? 1 : 0]!);
      w.pos = p;
      w.end(at, 2);
      return;
    }
    w.pos = p;
    const errorCode = textOf(records, t + S.errorCode);
    const abandonReason = textOf(records, t + S.abandonReason);
    if (errorCode) writeKeyValue(w, KEY.attribute, ERROR_CODE_KEY, errorCode);
    w.varint(KEY.droppedAttributes);
    w.varint(0);
    if (abandonReason) {
      const end = numbers[n + N.end]!;
      w.varint(KEY.event);
      const event = w.begin(1);
      w.varint(KEY.eventTime);
      writeMillis(w, end);
      w.varint(KEY.eventName);
      w.varint(ABANDONED.length);
      w.raw(ABANDONED);
      writeKeyValue(w, KEY.eventAttribute, REASON_KEY, abandonReason);
      w.varint(KEY.eventDropped);
      w.varint(0);
      w.end(event, 1);
    }
    w.varint(KEY.droppedEvents);
    w.varint(0);
    w.varint(KEY.droppedLinks);
    w.varint(0);
    if (errorCode) this.status(w, 2, errorCode);
    else w.raw(UNSET_STATUS);
    w.raw(SPAN_FLAGS_KEY);
    w.fixed32(hasParent ? SAMPLED_FLAGS | IS_REMOTE : SAMPLED_FLAGS);
    w.end(at, 2);
  }

  /** What request spans of this topic-partition share (the last one's, mostly: a batch's). */
  private partitionBytes(groupId: string, records: SpanRecords, n: number): PartitionBytes {
    const topic = records.topics[records.numbers[n + N.topic]!]!;
    const partition = records.numbers[n + N.partition]!;
    const last = this.last;
    if (last.partition === partition && last.topic === topic && last.groupId === groupId) {
      return last.bytes;
    }
    const byPartition = this.partitions.get(groupId).get(topic);
    let bytes = byPartition.get(partition);
    if (!bytes) {
      if (byPartition.size >= CACHE_LIMIT) byPartition.clear();
      bytes = partitionBytes(groupId, topic, partition);
      byPartition.set(partition, bytes);
    }
    // Updated in place: requests of a few partitions interleave, and this runs per span.
    last.groupId = groupId;
    last.topic = topic;
    last.partition = partition;
    last.bytes = bytes;
    return bytes;
  }

  /** An `infer` or `send` span: a root span with a link to each of its requests. */
  private groupSpan(w: ProtoWriter, span: GroupSpan): void {
    const g = span.record;
    w.varint(KEY.span);
    const at = w.begin(2);
    writeIds(w, g.ids, 0, TRACE_ID_WORDS);
    w.varint(KEY.name);
    w.string(g.name, utf8Length(g.name));
    w.varint(KEY.kind);
    w.varint(span.kind + 1);
    w.varint(KEY.start);
    writeMillis(w, g.start);
    w.varint(KEY.end);
    writeMillis(w, g.end);
    writeAttributes(w, KEY.attribute, g.attributes);
    w.varint(KEY.droppedAttributes);
    w.varint(0);
    w.varint(KEY.droppedEvents);
    w.varint(0);
    const links = g.links;
    // A link per request in the group: reserved at once, written without a check per field.
    w.reserve((links.length / GROUP_ID_WORDS) * (2 + LINK_LENGTH));
    const buf = w.bytes;
    let p = w.pos;
    for (let i = 0; i < links.length; i += GROUP_ID_WORDS) {
      buf[p++] = KEY.link;
      buf[p++] = LINK_LENGTH;
      buf[p++] = KEY.traceId;
      p = putIdBytes(buf, p, links, i, TRACE_ID_WORDS);
      buf[p++] = KEY.spanId;
      p = putIdBytes(buf, p, links, i + TRACE_ID_WORDS, SPAN_ID_WORDS);
      p = putBytes(buf, p, LINK_TAIL);
    }
    w.pos = p;
    w.varint(KEY.droppedLinks);
    w.varint(0);
    if (g.error) this.status(w, 2, g.error);
    else w.raw(UNSET_STATUS);
    w.raw(SPAN_FLAGS_KEY);
    w.fixed32(SAMPLED_FLAGS);
    w.end(at, 2);
  }

  private traceState(w: ProtoWriter, fieldKey: number, context: SpanContext): void {
    // Serialised as the SDK does, so a header's odd spacing or invalid members come out alike.
    const traceState = context.traceState?.serialize();
    if (!traceState) return;
    w.varint(fieldKey);
    w.string(traceState, utf8Length(traceState));
  }

  private status(w: ProtoWriter, code: number, message: string | undefined): void {
    w.varint(KEY.status);
    const at = w.begin(1);
    if (message) {
      w.varint(KEY.statusMessage);
      w.string(message, utf8Length(message));
    }
    w.varint(KEY.statusCode);
    w.varint(code);
    w.end(at, 1);
  }
}
