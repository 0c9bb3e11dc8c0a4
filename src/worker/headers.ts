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
  sourceTopic: 'streamscore.source.topic',
  sourcePartition: 'streamscore.source.partition',
  sourceOffset: 'streamscore.source.offset',
  sourceTimestamp: 'streamscore.source.timestamp',
} as const;

const OWN_PREFIX = 'streamscore.';
const MAX_MESSAGE_LENGTH = 1000;

export interface DeadLetterContext {
  topic: string;
  now: number;
  requestId?: string | undefined;
  model?: { name: string; version: string } | undefined;
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
  return { topic: context.topic, key: record.key, value: record.value ?? Buffer.alloc(0), headers };
}
