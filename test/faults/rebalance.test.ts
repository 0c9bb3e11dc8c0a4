/**
 * Fault 3: rebalances in the middle of a live stream. Worker A runs alone; worker B joins its
 * group (A gives up partitions), then B leaves with a clean SIGTERM drain (A takes them back)
 * while requests keep arriving; A answers the rest.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, inject, it } from 'vitest';
import { uniqueTopic } from '../integration/helpers/kafka.js';
import { useCleanups } from './helpers/cleanups.js';
import { collectFigures, expectGuarantee } from './helpers/guarantees.js';
import { createFaultTopics, RequestProducer, TopicWatcher } from './helpers/streams.js';
import { DELIVERY_MODES, startWorker, workerEnv, type LogLine } from './helpers/worker-process.js';

const brokers = inject('kafkaBrokers');
const PARTITIONS = 4;
/** The stream: requests per second, until the test stops it (at most MAX_REQUESTS). */
const RATE = 1000;
const MAX_REQUESTS = 60_000;
/** How long B works once it has partitions, and how long the stream goes on after B left. */
const B_WORKS_MS = 3000;
const STREAM_AFTER_B_MS = 3000;

const cleanups = useCleanups();

const assigned = (line: LogLine): boolean =>
  line.msg === 'partitions assigned' &&
  Array.isArray(line.partitions) &&
  line.partitions.length > 0 &&
  line.partitions.length < PARTITIONS;

describe.each(DELIVERY_MODES)('rebalance (%s)', (mode) => {
  it('a worker joins and leaves the group mid-stream: nothing lost', async () => {
    const topics = await createFaultTopics(brokers, 'rebalance', PARTITIONS);
    const groupId = uniqueTopic('rebalance-group');
    const env = workerEnv({ brokers, groupId, ...topics, mode });
    const watcher = await new TopicWatcher(brokers, topics.results, 'read_committed').start();
    cleanups.push(() => watcher.stop());

    const a = await startWorker('A', env);
    const producer = new RequestProducer(brokers, topics.requests, 'rebalance');
    cleanups.push(() => producer.disconnect());
    const streaming = producer.stream(0, MAX_REQUESTS, RATE);
    // A failed send must fail the test, not become an unhandled rejection.
    cleanups.push(() => streaming.then(() => undefined).catch(() => undefined));

    expect(await watcher.waitFor((w) => w.distinct.size >= 3 * RATE, 60_000), a.describe()).toBe(
      true,
    );
    const b = await startWorker('B', env);
    // B has its share once the group rebalanced (A rejoins at its next heartbeat).
    await b.waitForLog(assigned, 30_000, 'partitions assigned to B');
    await sleep(B_WORKS_MS);
    const answeredWhenBLeft = watcher.distinct.size;
    const sentWhenBLeft = producer.sent.length;
    expect((await b.stop()).code, b.describe()).toBe(0);
    const stopped = b.logs.find((line) => String(line.msg).startsWith('worker stopped'));
    expect(stopped, b.describe()).toMatchObject({ drained: true, unanswered: 0 });
    const answeredByB = Number(stopped!.produced);
    expect(answeredByB, 'B answered part of the stream').toBeGreaterThan(0);

    // The stream goes on after B left; A takes B's partitions back and answers the rest.
    await sleep(STREAM_AFTER_B_MS);
    producer.stop();
    await streaming;
    const sent = producer.sent;
    expect(sent.length, 'the stream was still running when B left').toBeGreaterThan(sentWhenBLeft);
    const allAnswered = await watcher.waitForAll(sent, 120_000);
    expect(allAnswered, a.describe()).toBe(true);
    expect(a.alive(), a.describe()).toBe(true);
    // A had all partitions, then its share next to B, then all of them again.
    const assignmentsOfA = a.logs.filter((line) => line.msg === 'partitions assigned');
    expect(assignmentsOfA.some(assigned), a.describe()).toBe(true);
    expect(assignmentsOfA.at(-1)?.partitions, a.describe()).toHaveLength(PARTITIONS);
    expect((await a.stop()).code, a.describe()).toBe(0);
    await watcher.stop();

    const figures = await collectFigures(
      `rebalance join+leave (${mode})`,
      brokers,
      groupId,
      topics,
      sent,
      {
        answeredWhenBLeft,
        sentWhenBLeft,
        answeredByB,
      },
    );
    expectGuarantee(mode, figures, sent.length);
  });
});
