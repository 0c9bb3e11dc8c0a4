import { describe, expect, it } from 'vitest';
import { StreamscoreError } from '../../src/errors.js';
import type { InboundRecord } from '../../src/kafka/types.js';
import {
  deadLetterFor,
  formatHistory,
  HEADER,
  isValueDropped,
  withoutValue,
} from '../../src/worker/headers.js';

const record: InboundRecord = {
  topic: 'requests',
  partition: 3,
  offset: '42',
  key: Buffer.from('k'),
  value: Buffer.from('original bytes'),
  headers: { traceparent: Buffer.from('00-abc'), 'streamscore.error.code': Buffer.from('OLD') },
  timestamp: 1700000000000,
};
const context = { topic: 'dlq', now: 1700000001000, requestId: 'req-1' };

describe('deadLetterFor', () => {
  it('a record that failed once has no attempts or history headers', () => {
    const error = new StreamscoreError('MODEL_FAILED', 'bad input');
    const letter = deadLetterFor(record, error, { ...context, history: [error] });
    expect(letter.headers[HEADER.errorAttempts]).toBeUndefined();
    expect(letter.headers[HEADER.errorHistory]).toBeUndefined();
    expect(letter.headers).toMatchObject({
      [HEADER.errorCode]: 'MODEL_FAILED',
      [HEADER.errorCategory]: 'failed',
      [HEADER.sourcePartition]: '3',
      [HEADER.sourceOffset]: '42',
      [HEADER.correlationId]: 'req-1',
    });
    expect(letter.value.toString()).toBe('original bytes');
    expect(letter.origin).toBe(record);
  });

  it('a record tried several times carries its attempt count and `code: message` history', () => {
    const history = [
      new StreamscoreError('REPLICA_CRASHED', 'replica exited with code 70'),
      new StreamscoreError('REPLICA_CRASHED', 'replica exited with code 70'),
      new StreamscoreError('MODEL_FAILED', 'out of memory; gave up'),
    ];
    const letter = deadLetterFor(record, history[2]!, { ...context, history });
    expect(letter.headers[HEADER.errorAttempts]).toBe('3');
    expect(letter.headers[HEADER.errorHistory]).toBe(
      'REPLICA_CRASHED: replica exited with code 70; REPLICA_CRASHED: replica exited with code 70; MODEL_FAILED: out of memory, gave up',
    );
    expect(letter.headers[HEADER.errorCode]).toBe('MODEL_FAILED');
  });
});

describe('formatHistory', () => {
  it('caps each entry and the whole list, keeping the newest attempts', () => {
    const history = Array.from({ length: 50 }, (_, i) => ({
      code: 'MODEL_FAILED',
      message: `attempt ${i} ${'x'.repeat(500)}`,
    }));
    const text = formatHistory(history);
    expect(text.length).toBeLessThanOrEqual(2000);
    expect(text.startsWith('…; ')).toBe(true);
    expect(text).toContain('attempt 49');
    expect(text).not.toContain('attempt 0 ');
    for (const entry of text.slice(3).split('; ')) expect(entry.length).toBeLessThanOrEqual(300);
  });
});

describe('withoutValue', () => {
  it('keeps why and where, drops the value and the original headers, and says so', () => {
    const letter = deadLetterFor(record, new StreamscoreError('PAYLOAD_TOO_LARGE', 'big'), context);
    const refusal = new StreamscoreError('KAFKA_RECORD_REJECTED', 'MESSAGE_TOO_LARGE');
    const slim = withoutValue(letter, refusal);
    expect(slim.value.length).toBe(0);
    expect(slim.key?.toString()).toBe('k');
    expect(slim.topic).toBe('dlq');
    expect(slim.headers.traceparent).toBeUndefined();
    expect(slim.headers).toMatchObject({
      [HEADER.errorCode]: 'PAYLOAD_TOO_LARGE',
      [HEADER.sourceTopic]: 'requests',
      [HEADER.sourcePartition]: '3',
      [HEADER.sourceOffset]: '42',
      [HEADER.correlationId]: 'req-1',
      [HEADER.errorDropped]: 'value,headers',
      [HEADER.errorDroppedReason]: 'KAFKA_RECORD_REJECTED: MESSAGE_TOO_LARGE',
    });
    expect(isValueDropped(slim)).toBe(true);
    expect(isValueDropped(letter)).toBe(false);
    expect(slim.origin).toBe(record);
  });
});
