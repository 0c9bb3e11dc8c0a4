/**
 * The worker as operators run it: `streamscore run` in its own process, configured only through
 * STREAMSCORE_* variables, stopped with SIGTERM in the middle of a stream and started again.
 */
import { Partitioners } from 'kafkajs';
import { afterEach, describe, expect, inject, it } from 'vitest';
import { AvroCodec } from '../../src/codec/avro.js';
import { loadDigitsDataset } from '../../src/model/digits-data.js';
import { killWorkers, startWorker } from '../faults/helpers/worker-process.js';
import { createTopics, readAll, testKafka, uniqueTopic } from './helpers/kafka.js';

const brokers = inject('kafkaBrokers');
const codec = new AvroCodec();
const TOTAL = 6000;

describe('streamscore run', () => {
  afterEach(killWorkers);

  it('drains on SIGTERM, exits 0, and a restart answers the rest: nothing lost', async () => {
    const topics = {
      requests: uniqueTopic('cli-requests'),
      results: uniqueTopic('cli-results'),
      deadLetter: uniqueTopic('cli-dlq'),
    };
    await createTopics(
      brokers,
      Object.values(topics).map((topic) => ({ topic, numPartitions: 3 })),
    );
    const env = {
      STREAMSCORE_KAFKA_BROKERS: brokers.join(','),
      STREAMSCORE_KAFKA_GROUP_ID: uniqueTopic('cli-group'),
      STREAMSCORE_TOPICS_REQUESTS: topics.requests,
      STREAMSCORE_TOPICS_RESULTS: topics.results,
      STREAMSCORE_TOPICS_DEAD_LETTER: topics.deadLetter,
      STREAMSCORE_LOG_LEVEL: 'info',
    };

    const first = await startWorker('first', env);
    const { heldOut } = loadDigitsDataset();
    const producer = testKafka(brokers).producer({
      createPartitioner: Partitioners.DefaultPartitioner,
    });
    await producer.connect();
    const send = (from: number, to: number) =>
      producer.send({
        topic: topics.requests,
        messages: Array.from({ length: to - from }, (_, k) => {
          const i = from + k;
          return {
            key: `k-${i}`,
            value: codec.encodeRequest({
              id: `q-${i}`,
              model: null,
              modelVersion: null,
              requestedAt: Date.now(),
              inputs: [{ name: 'pixels', shape: [64], data: heldOut[i % heldOut.length]!.pixels }],
            }),
          };
        }),
      });

    // Stop the worker while requests are still arriving.
    await send(0, 1000);
    await readAll(brokers, topics.results, { expected: 200, timeoutMs: 60_000 });
    first.kill('SIGTERM');
    for (let i = 1000; i < TOTAL; i += 1000) await send(i, i + 1000);
    expect(await first.exited).toEqual({ code: 0, signal: null });
    const stopped = first.logs.find((l) => String(l.msg).startsWith('worker stopped'));
    expect(stopped).toMatchObject({ drained: true, unanswered: 0 });
    const answeredByFirst = Number(stopped!.produced);
    expect(answeredByFirst).toBeGreaterThan(0);
    expect(answeredByFirst).toBeLessThan(TOTAL);

    const second = await startWorker('second', env);
    const results = await readAll(brokers, topics.results, { expected: TOTAL, timeoutMs: 120_000 });
    expect(await second.stop()).toEqual({ code: 0, signal: null });
    await producer.disconnect();

    const ids = new Set(results.map((m) => codec.decodeResult(m.value!).id));
    const lost = Array.from({ length: TOTAL }, (_, i) => `q-${i}`).filter((id) => !ids.has(id));
    const duplicates = results.length - ids.size;
    console.log(
      `SIGTERM + restart: sent ${TOTAL}, answered ${ids.size} (first worker ${answeredByFirst}), duplicates ${duplicates}, lost ${lost.length}`,
    );
    expect(lost).toEqual([]);
    // A drained stop commits everything it answered, so the restart repeats nothing.
    expect(duplicates).toBe(0);
  });
});
