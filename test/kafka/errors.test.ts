import { createRequire } from 'node:module';
import {
  KafkaJSConnectionError,
  KafkaJSError,
  KafkaJSNonRetriableError,
  KafkaJSNumberOfRetriesExceeded,
  KafkaJSRequestTimeoutError,
} from 'kafkajs';
import { describe, expect, it } from 'vitest';
import { categoryOf, StreamscoreError } from '../../src/errors.js';
import { classifyKafkaError, isRecordRejection, kafkaErrorType } from '../../src/kafka/errors.js';

// Protocol errors exactly as kafkajs builds them from a broker's error code.
const { createErrorFromCode } = createRequire(import.meta.url)('kafkajs/src/protocol/error.js') as {
  createErrorFromCode: (code: number) => KafkaJSError & { type: string };
};
const protocol = {
  CORRUPT_MESSAGE: 2,
  NOT_LEADER_FOR_PARTITION: 6,
  REQUEST_TIMED_OUT: 7,
  MESSAGE_TOO_LARGE: 10,
  RECORD_LIST_TOO_LARGE: 18,
  TOPIC_AUTHORIZATION_FAILED: 29,
  INVALID_PRODUCER_EPOCH: 47,
  TRANSACTIONAL_ID_AUTHORIZATION_FAILED: 53,
  INVALID_RECORD: 87,
} as const;
const fromBroker = (type: keyof typeof protocol) => {
  const err = createErrorFromCode(protocol[type]);
  expect(err.type).toBe(type); // the table above matches kafkajs's
  return err;
};
/** What kafkajs's retrier rejects with once it gives up on a retriable error. */
const retriesExceeded = (cause: Error) =>
  new KafkaJSNumberOfRetriesExceeded(cause, { retryCount: 5, retryTime: 1000 });

describe('classifyKafkaError', () => {
  it.each([
    'MESSAGE_TOO_LARGE',
    'INVALID_RECORD',
    'CORRUPT_MESSAGE',
    'RECORD_LIST_TOO_LARGE',
  ] as const)('%s: the broker refused the records, not retriable', (type) => {
    const error = classifyKafkaError(fromBroker(type));
    expect(error).toBeInstanceOf(StreamscoreError);
    expect(error).toMatchObject({ code: 'KAFKA_RECORD_REJECTED', retriable: false });
    expect(error.details.kafkaType).toBe(type);
    expect(categoryOf(error.code)).toBe('failed');
  });

  it('finds the refusal under kafkajs wrappers (the retrier bails with a non-retriable wrapper)', () => {
    // kafkajs's retry/index.js: `new KafkaJSNonRetriableError(e, { cause: e.cause || e })`.
    const Wrapper = KafkaJSNonRetriableError as unknown as new (
      e: Error,
      options: { cause: Error },
    ) => Error;
    const refusal = fromBroker('MESSAGE_TOO_LARGE');
    const wrapped = new Wrapper(refusal, { cause: refusal });
    expect(kafkaErrorType(wrapped)).toBe('MESSAGE_TOO_LARGE');
    expect(isRecordRejection(wrapped)).toBe(true);
  });

  it.each(['INVALID_PRODUCER_EPOCH', 'TRANSACTIONAL_ID_AUTHORIZATION_FAILED'] as const)(
    '%s: fenced, not retriable',
    (type) => {
      expect(classifyKafkaError(fromBroker(type))).toMatchObject({
        code: 'KAFKA_FENCED',
        retriable: false,
      });
    },
  );

  it('PRODUCER_FENCED (newer brokers; kafkajs 2.2.4 has no code for it) by type', () => {
    const err = Object.assign(new KafkaJSError('fenced', { retriable: false }), {
      type: 'PRODUCER_FENCED',
    });
    expect(classifyKafkaError(err).code).toBe('KAFKA_FENCED');
  });

  it.each([
    ['NOT_LEADER_FOR_PARTITION', () => fromBroker('NOT_LEADER_FOR_PARTITION')],
    ['REQUEST_TIMED_OUT', () => fromBroker('REQUEST_TIMED_OUT')],
    ['a refused connection', () => new KafkaJSConnectionError('connect ECONNREFUSED')],
    [
      'a request timeout',
      () => new KafkaJSRequestTimeoutError('Request Produce(key: 0) timed out'),
    ],
    [
      'retries exhausted on a leader election',
      () => retriesExceeded(fromBroker('NOT_LEADER_FOR_PARTITION')),
    ],
    [
      'retries exhausted on a lost connection',
      () => retriesExceeded(new KafkaJSConnectionError('Connection closed')),
    ],
  ])('%s: unavailable, retriable', (_what, make) => {
    const error = classifyKafkaError(make());
    expect(error).toMatchObject({ code: 'KAFKA_UNAVAILABLE', retriable: true });
    expect(isRecordRejection(make())).toBe(false);
  });

  it('a non-retriable failure that is neither a refusal nor fencing: send failed, not retriable', () => {
    expect(classifyKafkaError(fromBroker('TOPIC_AUTHORIZATION_FAILED'))).toMatchObject({
      code: 'KAFKA_SEND_FAILED',
      retriable: false,
    });
    expect(
      classifyKafkaError(new KafkaJSNonRetriableError('The producer is disconnecting')),
    ).toMatchObject({ code: 'KAFKA_SEND_FAILED', retriable: false });
  });

  it('anything else is a send failure, retriable unless it says otherwise (kafkajs rule)', () => {
    const error = classifyKafkaError(new Error('socket hang up'));
    expect(error).toMatchObject({ code: 'KAFKA_SEND_FAILED', retriable: true });
    expect(error.cause).toBeInstanceOf(Error);
    expect(classifyKafkaError('boom').message).toContain('boom');
  });

  it('passes StreamscoreErrors through unchanged', () => {
    const own = new StreamscoreError('KAFKA_UNAVAILABLE', 'x', { retriable: true });
    expect(classifyKafkaError(own)).toBe(own);
  });
});
