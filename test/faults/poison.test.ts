/**
 * Fault 4: poison records. 1,000 records that can never be scored — random bytes, truncated Avro,
 * a record of another Avro schema, empty values, wrong tensor shapes, payloads over
 * limits.maxPayloadBytes, NaN inputs — interleaved with 10,000 good requests on a 4-partition
 * topic, served by `streamscore run` as its own process. Every poison record must reach the
 * dead-letter topic with the code its kind calls for, every good request must be answered, and
 * the one worker process must keep running throughout: poison never costs a crash or a restart.
 */
import avro from 'avsc';
import { Partitioners } from 'kafkajs';
import { describe, expect, inject, it } from 'vitest';
import { AvroCodec } from '../../src/codec/avro.js';
import { loadDigitsDataset } from '../../src/model/digits-data.js';
import { HEADER } from '../../src/worker/headers.js';
import { createTopics, readAll, testKafka, uniqueTopic } from '../integration/helpers/kafka.js';
import { countFigures, reportFigures } from './figures.js';
import { useCleanups } from './helpers/cleanups.js';
import { startWorker, workerEnv } from './helpers/worker-process.js';

const brokers = inject('kafkaBrokers');
const codec = new AvroCodec();
const GOOD = 10_000;
const POISON = 1_000;
const PARTITIONS = 4;
const MAX_PAYLOAD_BYTES = 16 * 1024;

/** mulberry32: a small seeded PRNG, so the stream (and each record's expected fate) is fixed. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Each poison kind, and the dead-letter code the worker's design gives it. */
const KINDS = {
  randomBytes: 'DECODE_FAILED',
  truncatedAvro: 'DECODE_FAILED',
  otherSchema: 'DECODE_FAILED',
  empty: 'EMPTY_PAYLOAD',
  wrongShape: 'WRONG_SHAPE',
  oversized: 'PAYLOAD_TOO_LARGE',
  nan: 'NON_FINITE',
} as const;
type Kind = keyof typeof KINDS;

/** A record of an unrelated schema, as another team's producer might write to the wrong topic. */
const orderType = avro.Type.forSchema({
  type: 'record',
  name: 'Order',
  namespace: 'com.example',
  fields: [
    { name: 'orderId', type: 'long' },
    { name: 'customer', type: 'string' },
    { name: 'amount', type: 'double' },
    { name: 'items', type: { type: 'array', items: 'string' } },
  ],
});

interface Produced {
  key: string;
  value: Buffer | null;
  kind: Kind | 'good';
}

function generate(seed: number): Produced[] {
  const random = prng(seed);
  const { heldOut } = loadDigitsDataset();
  const int = (n: number) => Math.floor(random() * n);
  const request = (id: string, inputs: { shape: number[]; data: Float32Array }[]) =>
    codec.encodeRequest(
      {
        id,
        model: null,
        modelVersion: null,
        requestedAt: Date.now(),
        inputs: inputs.map((t) => ({ name: 'pixels', ...t })),
      },
      random() < 0.5 ? 'bytes' : 'array',
    );
  const pixels = () => heldOut[int(heldOut.length)]!.pixels;
  /** Throws unless `value` fails to decode as a request, as its kind is meant to. */
  const undecodable = (value: Buffer) => {
    try {
      codec.decodeRequest(value);
    } catch {
      return value;
    }
    return null;
  };
  const kinds = Object.keys(KINDS) as Kind[];

  const poison = (i: number): Produced => {
    const kind = kinds[i % kinds.length]!;
    const key = `poison-${kind}-${i}`;
    const make = (): Buffer | null => {
      switch (kind) {
        case 'randomBytes':
          return undecodable(Buffer.from(Array.from({ length: 20 + int(400) }, () => int(256))));
        case 'truncatedAvro': {
          const whole = request(key, [{ shape: [64], data: pixels() }]);
          return undecodable(whole.subarray(0, 1 + int(whole.length - 2)));
        }
        case 'otherSchema':
          return undecodable(
            orderType.toBuffer({
              orderId: int(1e9),
              customer: `customer-${int(1000)}`,
              amount: random() * 100,
              items: Array.from({ length: 1 + int(4) }, (_, k) => `sku-${k}`),
            }),
          );
        case 'empty':
          return null;
        case 'wrongShape': {
          const n = [16, 32, 63, 65, 128][int(5)]!;
          return request(key, [{ shape: [n], data: new Float32Array(n).fill(1) }]);
        }
        case 'oversized': {
          // A well-formed request whose tensor is far larger than the limit allows.
          const n = MAX_PAYLOAD_BYTES / 4 + 1 + int(8192);
          return request(key, [{ shape: [n], data: new Float32Array(n).fill(0.5) }]);
        }
        case 'nan': {
          const data = Float32Array.from(pixels());
          data[int(64)] = Number.NaN;
          return request(key, [{ shape: [64], data }]);
        }
      }
    };
    // A random draw that happens to decode is drawn again (deterministically).
    let value = make();
    while (value === null && kind !== 'empty') value = make();
    return { key, value, kind };
  };

  const records: Produced[] = [];
  for (let i = 0; i < GOOD; i++) {
    const key = `good-${i}`;
    records.push({ key, value: request(key, [{ shape: [64], data: pixels() }]), kind: 'good' });
  }
  // Interleave: each poison record at a random place in the stream.
  for (let i = 0; i < POISON; i++) records.splice(int(records.length + 1), 0, poison(i));
  return records;
}

describe('fault 4: poison records', () => {
  useCleanups();

  it('dead-letters every poison record with its code, answers every good one, and never restarts', async () => {
    const topics = {
      requests: uniqueTopic('poison-requests'),
      results: uniqueTopic('poison-results'),
      deadLetter: uniqueTopic('poison-dlq'),
    };
    await createTopics(
      brokers,
      Object.values(topics).map((topic) => ({ topic, numPartitions: PARTITIONS })),
    );
    const records = generate(4);
    const expected = new Map(
      records.filter((r) => r.kind !== 'good').map((r) => [r.key, KINDS[r.kind as Kind]]),
    );
    expect(expected.size).toBe(POISON);

    const worker = await startWorker(
      'poison',
      workerEnv({
        brokers,
        groupId: uniqueTopic('poison-group'),
        ...topics,
        mode: 'at-least-once',
        extra: { STREAMSCORE_LIMITS_MAX_PAYLOAD_BYTES: String(MAX_PAYLOAD_BYTES) },
      }),
    );
    const pid = worker.pid;

    const producer = testKafka(brokers).producer({
      createPartitioner: Partitioners.DefaultPartitioner,
    });
    await producer.connect();
    for (let i = 0; i < records.length; i += 500) {
      await producer.send({
        topic: topics.requests,
        messages: records.slice(i, i + 500).map(({ key, value }) => ({ key, value })),
      });
    }
    await producer.disconnect();

    const results = await readAll(brokers, topics.results, { expected: GOOD, timeoutMs: 150_000 });
    const letters = await readAll(brokers, topics.deadLetter, {
      expected: POISON,
      timeoutMs: 60_000,
    });

    // The same process served the whole stream and is still serving.
    expect(worker.alive(), worker.describe()).toBe(true);
    expect(worker.child.pid).toBe(pid);
    expect(worker.logs.filter((l) => l.msg === 'worker started')).toHaveLength(1);
    // No error or fatal of its own (kafkajs's own log lines aside).
    expect(worker.logs.filter((l) => Number(l.level) >= 50 && l.component !== 'kafkajs')).toEqual(
      [],
    );

    const resultIds = results.map((m) => codec.decodeResult(m.value!).id);
    const letterKeys = letters.map((m) => m.key!.toString());
    const figures = countFigures({
      sent: records.map((r) => r.key),
      resultIds,
      // Every record here has a unique key equal to its id (poison included), and dead letters
      // keep the key: it identifies records that never decoded far enough to have an id.
      deadLetterIds: letterKeys,
    });
    const byCode: Record<string, number> = {};
    for (const letter of letters) {
      const code = letter.headers![HEADER.errorCode]!.toString();
      byCode[code] = (byCode[code] ?? 0) + 1;
    }
    reportFigures('poison records (streamscore run, 4 partitions)', figures, {
      poison: POISON,
      deadLetteredByCode: byCode,
      workerRestarts: worker.alive() ? 0 : 1,
    });

    // Every good request answered, and nothing else.
    const goodIds = records.filter((r) => r.kind === 'good').map((r) => r.key);
    expect(new Set(resultIds)).toEqual(new Set(goodIds));
    // Every poison record dead-lettered once, with the code of its kind.
    const mismatched = letters
      .map((letter) => ({
        key: letter.key!.toString(),
        code: letter.headers![HEADER.errorCode]!.toString(),
        category: letter.headers![HEADER.errorCategory]!.toString(),
      }))
      .filter(
        ({ key, code, category }) => expected.get(key) !== code || category !== 'unprocessable',
      );
    expect(mismatched).toEqual([]);
    expect(new Set(letterKeys)).toEqual(new Set(expected.keys()));
    expect(figures).toMatchObject({ lost: 0, duplicates: 0, answered: GOOD, deadLettered: POISON });

    expect(await worker.stop()).toEqual({ code: 0, signal: null });
  });
});
