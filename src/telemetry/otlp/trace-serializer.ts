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
  type Outcome,
} from '../span-records.js';
import { SPAN_ID_WORDS, TRACE_ID_WORDS } from '../trace-ids.js';
import { ProtoWriter, utf8, utf8Length, varintSize } from './proto-writer.js';

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

/** A KeyValue whose string value is given as UTF-8 bytes: `length` of them from `at`. */
function writeTextKeyValue(
  w: ProtoWriter,
  fieldKey: number,
  keyField: Uint8Array,
  text: Uint8Array,
  at: number,
  length: number,
): void {
  const anySize = 1 + varintSize(length) + length;
  w.varint(fieldKey);
  w.varint(keyField.length + 1 + varintSize(anySize) + anySize);
  w.raw(keyField);
  w.varint(KEY.kvValue);
  w.varint(anySize);
  w.varint(KEY.stringValue);
  w.varint(length);
  w.raw(text, at, length);
}

/** A KeyValue whose value is a span id's words as a hex string (16 digits). */
function writeSpanIdValue(
  w: ProtoWriter,
  fieldKey: number,
  keyField: Uint8Array,
  words: Int32Array,
  at: number,
): void {
  const anySize = 2 + 8 * SPAN_ID_WORDS;
  w.varint(fieldKey);
  w.varint(keyField.length + 2 + anySize);
  w.raw(keyField);
  w.varint(KEY.kvValue);
  w.varint(anySize);
  w.varint(KEY.stringValue);
  w.hexString(words, at, SPAN_ID_WORDS);
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

/** Span times are epoch milliseconds in the records, HrTime in the SDK: the same conversion. */
function writeMillis(w: ProtoWriter, epochMillis: number): void {
  w.hrTime(Math.trunc(epochMillis / 1000), Math.round((epochMillis % 1000) * 1e6));
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

const OFFSET_KEY = keyField('messaging.kafka.offset');
const QUEUE_WAIT_KEY = keyField(SPAN_ATTRIBUTE.queueWaitMs);
const MESSAGE_ID_KEY = keyField('messaging.message.id');
const BATCH_SPAN_KEY = keyField(SPAN_ATTRIBUTE.batchSpanId);
const BATCH_WAIT_KEY = keyField(SPAN_ATTRIBUTE.batchWaitMs);
const INFERENCE_KEY = keyField(SPAN_ATTRIBUTE.inferenceMs);
const ERROR_CODE_KEY = keyField(SPAN_ATTRIBUTE.errorCode);
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
 * What the request spans of one consumer group's topic-partition share, encoded once: the name
 * and kind fields, and the five attributes they start with (RequestSpan.attributes's order).
 */
interface PartitionBytes {
  nameAndKind: Uint8Array;
  attributes: Uint8Array;
}

function partitionBytes(groupId: string, topic: string, partition: number): PartitionBytes {
  return {
    nameAndKind: encoded((w) => {
      const name = `process ${topic}`;
      w.varint(KEY.name);
      w.string(name, utf8Length(name));
      w.varint(KEY.kind);
      w.varint(CONSUMER_KIND);
    }),
    attributes: encoded((w) => {
      const attribute = (key: string, value: string) =>
        writeKeyValue(w, KEY.attribute, keyField(key), value);
      attribute('messaging.system', 'kafka');
      attribute('messaging.operation.type', 'process');
      attribute('messaging.destination.name', topic);
      attribute('messaging.destination.partition.id', String(partition));
      attribute('messaging.consumer.group.name', groupId);
    }),
  };
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
    bytes: { nameAndKind: new Uint8Array(0), attributes: new Uint8Array(0) },
  };
  private readonly outcomes = OUTCOMES.map((outcome: Outcome) =>
    encoded((w) => writeKeyValue(w, KEY.attribute, keyField(SPAN_ATTRIBUTE.outcome), outcome)),
  );
  private readonly envelopes = new WeakMap<Resource, Uint8Array>();
  private readonly scopes = new WeakMap<InstrumentationScope, Uint8Array>();

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
    return w.take();
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

  private requestSpan(w: ProtoWriter, span: RequestSpan): void {
    const { records, index } = span;
    const { numbers, ids, texts } = records;
    const n = index * NUMBERS;
    const d = index * ID_WORDS;
    const t = index * TEXTS;
    const shared = this.partitionBytes(
      span.shared.groupId,
      records.topics[numbers[n + N.topic]!]!,
      numbers[n + N.partition]!,
    );
    const hasParent = hasId(ids, d + ID.parent);
    // Rare strings are decoded; the request id, on every span, is copied as bytes.
    const errorCode = textOf(records, t + S.errorCode);
    const abandonReason = textOf(records, t + S.abandonReason);
    const end = numbers[n + N.end]!;
    w.varint(KEY.span);
    const at = w.begin(2);
    writeIds(w, ids, d + ID.trace, d + ID.span);
    if (texts[t + S.traceState + 1]) this.traceState(w, KEY.traceState, span.spanContext());
    if (hasParent) {
      w.varint(KEY.parentSpanId);
      w.idBytes(ids, d + ID.parent, SPAN_ID_WORDS);
    }
    w.raw(shared.nameAndKind);
    w.varint(KEY.start);
    writeMillis(w, numbers[n + N.start]!);
    w.varint(KEY.end);
    writeMillis(w, end);
    // The attributes in RequestSpan.attributes's order.
    w.raw(shared.attributes);
    writeKeyValue(w, KEY.attribute, OFFSET_KEY, numbers[n + N.offset]!);
    writeKeyValue(w, KEY.attribute, QUEUE_WAIT_KEY, numbers[n + N.queueWait]!);
    w.raw(this.outcomes[numbers[n + N.outcome]!]!);
    const requestIdLength = texts[t + S.requestId + 1]!;
    if (requestIdLength) {
      writeTextKeyValue(
        w,
        KEY.attribute,
        MESSAGE_ID_KEY,
        records.text,
        texts[t + S.requestId]!,
        requestIdLength,
      );
    }
    if (hasId(ids, d + ID.batch)) {
      writeSpanIdValue(w, KEY.attribute, BATCH_SPAN_KEY, ids, d + ID.batch);
      writeKeyValue(w, KEY.attribute, BATCH_WAIT_KEY, numbers[n + N.batchWait]!);
      writeKeyValue(w, KEY.attribute, INFERENCE_KEY, numbers[n + N.inference]!);
    }
    if (errorCode) writeKeyValue(w, KEY.attribute, ERROR_CODE_KEY, errorCode);
    w.varint(KEY.droppedAttributes);
    w.varint(0);
    if (abandonReason) {
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
  private partitionBytes(groupId: string, topic: string, partition: number): PartitionBytes {
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
    this.last = { groupId, topic, partition, bytes };
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
    for (let i = 0; i < links.length; i += GROUP_ID_WORDS) {
      w.varint(KEY.link);
      w.varint(LINK_LENGTH);
      writeIds(w, links, i, i + TRACE_ID_WORDS);
      w.raw(LINK_TAIL);
    }
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
