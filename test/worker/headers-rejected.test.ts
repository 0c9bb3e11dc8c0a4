/**
 * What the worker sends in place of records the broker refused for good (its OrderedSender
 * onRejected callback, `onSendRejected`), tested directly until the constructor wires it.
 */
import { describe, expect, it } from 'vitest';
import { AvroCodec } from '../../src/codec/avro.js';
import { StreamscoreError } from '../../src/errors.js';
import type { InboundRecord, OutboundRecord } from '../../src/kafka/types.js';
import { deadLetterFor, HEADER } from '../../src/worker/headers.js';
import { InferenceWorker } from '../../src/worker/worker.js';
import { FakeModel, FakeSink, FakeSource } from '../helpers/fakes.js';

const origin: InboundRecord = {
  topic: 'requests',
  partition: 2,
  offset: '17',
  key: Buffer.from('k'),
  value: Buffer.from('request bytes'),
  headers: { traceparent: Buffer.from('00-abc') },
  timestamp: 5,
};
const refusal = new StreamscoreError(
  'KAFKA_RECORD_REJECTED',
  'broker rejected the records (MESSAGE_TOO_LARGE)',
);

function worker() {
  const w = new InferenceWorker({
    source: new FakeSource(),
    sink: new FakeSink(),
    model: new FakeModel(),
    codec: new AvroCodec(),
    options: {
      resultTopic: 'results',
      deadLetterTopic: 'dlq',
      failedTopic: 'failed',
      maxBatchSize: 8,
      maxDelayMs: 1,
      maxQueued: 100,
      maxPayloadBytes: 10_000,
      commitIntervalMs: 0,
      drainTimeoutMs: 100,
    },
  });
  const onSendRejected = (records: OutboundRecord[]) =>
    (
      w as unknown as {
        onSendRejected(r: OutboundRecord[], e: StreamscoreError): OutboundRecord[];
      }
    ).onSendRejected(records, refusal);
  return { w, onSendRejected };
}

describe('records the broker refuses', () => {
  it('a refused result becomes a dead letter of its request: KAFKA_RECORD_REJECTED, failed', () => {
    const { w, onSendRejected } = worker();
    const result: OutboundRecord = {
      topic: 'results',
      key: origin.key,
      value: Buffer.alloc(10),
      headers: { [HEADER.correlationId]: 'req-17' },
      origin,
    };
    const [letter, ...rest] = onSendRejected([result]);
    expect(rest).toEqual([]);
    expect(letter!.topic).toBe('failed');
    expect(letter!.value.toString()).toBe('request bytes');
    expect(letter!.headers).toMatchObject({
      [HEADER.errorCode]: 'KAFKA_RECORD_REJECTED',
      [HEADER.errorCategory]: 'failed',
      [HEADER.correlationId]: 'req-17',
      [HEADER.sourceOffset]: '17',
    });
    expect(w.metrics.snapshot.deadLetteredByCode).toMatchObject({ KAFKA_RECORD_REJECTED: 1 });
  });

  it('a refused dead letter is sent again without the value, still pointing at its source', () => {
    const { onSendRejected } = worker();
    const letter = deadLetterFor(origin, new StreamscoreError('WRONG_SHAPE', 'bad'), {
      topic: 'dlq',
      now: 0,
    });
    const [slim] = onSendRejected([letter]);
    expect(slim!.value.length).toBe(0);
    expect(slim!.topic).toBe('dlq');
    expect(slim!.headers).toMatchObject({
      [HEADER.errorCode]: 'WRONG_SHAPE',
      [HEADER.errorDropped]: 'value,headers',
      [HEADER.sourceTopic]: 'requests',
      [HEADER.sourcePartition]: '2',
      [HEADER.sourceOffset]: '17',
    });
    // Refused even so: nothing more to drop; counted and left out.
    const { w: again, onSendRejected: secondTime } = worker();
    expect(secondTime([slim!])).toEqual([]);
    expect(again.metrics.snapshot.deadLetteredByCode).toMatchObject({ KAFKA_RECORD_REJECTED: 1 });
  });
});
