import { categoryOf, type StreamscoreError } from '../errors.js';
import type { InboundRecord, OutboundRecord } from '../kafka/types.js';

/** Header names streamscore writes. Documented in docs/schemas.md; keep them stable. */
export const HEADER = {
  correlationId: 'correlation-id',
  model: 'streamscore.model',
  modelVersion: 'streamscore.model.version',
  errorCode: 'streamscore.error.code',
  errorCategory: 'streamscore.error.category',
  errorMessage: 'streamscore.error.message',
  errorTime: 'streamscore.error.time',
  /** How many times scoring this record was tried; only on records tried more than once. */
  errorAttempts: 'streamscore.error.attempts',
  /** `code: message` of every failed attempt, oldest first, `; `-joined and length-capped. */
  errorHistory: 'streamscore.error.history',
  /** What was left out of this dead letter because the broker refused it whole ("value", "value,headers"). */
  errorDropped: 'streamscore.error.dropped',
  /** Why it was left out: the broker's refusal of the full dead letter. */
  errorDroppedReason: 'streamscore.error.dropped.reason',
  sourceTopic: 'streamscore.source.topic',
  sourcePartition: 'streamscore.source.partition',
  sourceOffset: 'streamscore.source.offset',
  sourceTimestamp: 'streamscore.source.timestamp',
} as const;

const OWN_PREFIX = 'streamscore.';
const MAX_MESSAGE_LENGTH = 1000;
/** Longest history header; one entry is cut at HISTORY_ENTRY_LENGTH. */
const MAX_HISTORY_LENGTH = 2000;
const HISTORY_ENTRY_LENGTH = 300;

export interface DeadLetterContext {
  topic: string;
  now: number;
  requestId?: string | undefined;
  model?: { name: string; version: string } | undefined;
  /**
   * Every failure of this record, oldest first (the last is `error` itself or led to it). With
   * more than one entry the dead letter carries the attempts and history headers.
   */
  history?: readonly { code: string; message: string }[] | undefined;
}

/**
 * `code: message` per attempt, `; `-joined. Each entry is cut at HISTORY_ENTRY_LENGTH characters
 * and the list at MAX_HISTORY_LENGTH (the newest entries are kept; `…` marks what was cut).
 */
export function formatHistory(history: readonly { code: string; message: string }[]): string {
  const entries = history.map((h) => {
    const entry = `${h.code}: ${h.message.replace(/;/g, ',')}`;
    return entry.length > HISTORY_ENTRY_LENGTH
      ? `${entry.slice(0, HISTORY_ENTRY_LENGTH - 1)}…`
      : entry;
  });
  let text = entries.join('; ');
  while (text.length > MAX_HISTORY_LENGTH && entries.length > 1) {
    entries.shift();
    text = `…; ${entries.join('; ')}`;
  }
  return text.length > MAX_HISTORY_LENGTH ? `${text.slice(0, MAX_HISTORY_LENGTH - 1)}…` : text;
}

/**
 * A dead letter is the original record, untouched (key, value, headers), plus headers that say
 * why and where it came from, so it can be inspected and replayed as it was.
 */
export function deadLetterFor(
  record: InboundRecord,
  error: StreamscoreError,
  context: DeadLetterContext,
): OutboundRecord {
  const headers: Record<string, string | Buffer> = {};
  for (const [name, value] of Object.entries(record.headers)) {
    if (value !== undefined && !name.startsWith(OWN_PREFIX)) headers[name] = value;
  }
  Object.assign(headers, {
    [HEADER.errorCode]: error.code,
    [HEADER.errorCategory]: categoryOf(error.code),
    [HEADER.errorMessage]: error.message.slice(0, MAX_MESSAGE_LENGTH),
    [HEADER.errorTime]: new Date(context.now).toISOString(),
    [HEADER.sourceTopic]: record.topic,
    [HEADER.sourcePartition]: String(record.partition),
    [HEADER.sourceOffset]: record.offset,
    [HEADER.sourceTimestamp]: String(record.timestamp),
  });
  if (context.requestId !== undefined) headers[HEADER.correlationId] = context.requestId;
  if (context.model) {
    headers[HEADER.model] = context.model.name;
    headers[HEADER.modelVersion] = context.model.version;
  }
  if (context.history && context.history.length > 1) {
    headers[HEADER.errorAttempts] = String(context.history.length);
    headers[HEADER.errorHistory] = formatHistory(context.history);
  }
  return {
    topic: context.topic,
    key: record.key,
    value: record.value ?? Buffer.alloc(0),
    headers,
    origin: record,
  };
}

/**
 * The last resort for a dead letter the broker refused (too large, invalid): the same dead letter
 * without the original value and headers, keeping the key and every streamscore header, so it
 * still says why the record failed and where it lies (source topic, partition, offset).
 */
export function withoutValue(
  deadLetter: OutboundRecord,
  refusal: StreamscoreError,
): OutboundRecord {
  const headers: Record<string, string | Buffer> = {};
  let droppedHeaders = false;
  for (const [name, value] of Object.entries(deadLetter.headers)) {
    if (name.startsWith(OWN_PREFIX) || name === HEADER.correlationId) headers[name] = value;
    else droppedHeaders = true;
  }
  headers[HEADER.errorDropped] = droppedHeaders ? 'value,headers' : 'value';
  headers[HEADER.errorDroppedReason] = `${refusal.code}: ${refusal.message}`.slice(
    0,
    MAX_MESSAGE_LENGTH,
  );
  return { ...deadLetter, value: Buffer.alloc(0), headers };
}

/** True for a dead letter made by withoutValue(): nothing is left to drop. */
export function isValueDropped(record: OutboundRecord): boolean {
  return record.headers[HEADER.errorDropped] !== undefined;
}
