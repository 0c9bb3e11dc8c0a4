/**
 * Fault 2: the broker stops in the middle of a stream (a clean SIGTERM shutdown, as in a rolling
 * restart) and comes back a few seconds later on the same address and data. The worker process
 * must ride it out on its own: same process, nothing lost, and its offset commits landing again
 * once the broker is back.
 *
 * The test runs its own broker, so stopping it disturbs no other test.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import { startLocalBroker, type LocalBroker } from '../../src/kafka/local-broker.js';
import { uniqueTopic } from '../integration/helpers/kafka.js';
import { useCleanups } from './helpers/cleanups.js';
import { collectFigures, expectGuarantee } from './helpers/guarantees.js';
import { fixedPorts } from './helpers/ports.js';
import {
  createFaultTopics,
  pollUntil,
  RequestProducer,
  TopicWatcher,
  uncommittedRecords,
} from './helpers/streams.js';
import { DELIVERY_MODES, startWorker, warnings, workerEnv } from './helpers/worker-process.js';

/** Requests produced before the broker stops, and as many again once it is back. */
const HALF = 10_000;
const PARTITIONS = 4;
/**
 * Longer than kafkajs's consumer retries last (about 9 s), so the worker's consumer crashes and
 * restarts itself during the outage, not just its requests being retried.
 */
const DOWN_MS = 10_000;

const log = (msg: string): void => console.error(`[fault broker] ${msg}`);

let broker: LocalBroker | undefined;
const cleanups = useCleanups(async () => {
  await broker?.stop();
  broker = undefined;
});

describe.each(DELIVERY_MODES)('broker restart (%s)', (mode) => {
  it('the same worker process recovers when the broker stops and comes back: nothing lost', async () => {
    const [port, controllerPort] = await fixedPorts(2);
    broker = await startLocalBroker({ port, controllerPort, heapMb: 384, log });
    const brokers = broker.brokers;
    const topics = await createFaultTopics(brokers, 'restart', PARTITIONS);
    const groupId = uniqueTopic('restart-group');
    const env = workerEnv({ brokers, groupId, ...topics, mode });

    const before = new RequestProducer(brokers, topics.requests, 'restart');
    cleanups.push(() => before.disconnect());
    await before.produce(0, HALF);
    const watcher = await new TopicWatcher(brokers, topics.results, 'read_committed').start();
    cleanups.push(() => watcher.stop());

    const worker = await startWorker('A', env);
    expect(
      await watcher.waitFor((w) => w.distinct.size >= HALF / 4, 90_000),
      worker.describe(),
    ).toBe(true);
    // The test's own clients leave first; only the worker lives through the outage.
    await watcher.stop();
    await before.disconnect();
    const answeredBeforeStop = watcher.distinct.size;
    expect(answeredBeforeStop, 'the broker stops mid-stream').toBeLessThan(HALF);
    const logLinesBeforeStop = worker.logs.length;

    await broker.stop(); // SIGTERM: Kafka's controlled shutdown, the JVM gone when it resolves
    await sleep(DOWN_MS);
    expect(worker.alive(), worker.describe()).toBe(true);
    broker = await broker.restart();

    const watcherAfter = await new TopicWatcher(brokers, topics.results, 'read_committed').start();
    cleanups.push(() => watcherAfter.stop());
    const firstHalfAnswered = await watcherAfter.waitForAll(before.sent, 120_000);
    expect(firstHalfAnswered, worker.describe(30)).toBe(true);
    // Recovered means committing again too. With nothing new to answer, the group's offsets must
    // catch up with everything answered so far: a commit lost to the outage would otherwise stay
    // lost until new records arrive on that partition, and a crash would answer them all again.
    let uncommittedAfterRecovery = HALF;
    await pollUntil(async () => {
      uncommittedAfterRecovery = await uncommittedRecords(brokers, groupId, topics.requests);
      return uncommittedAfterRecovery === 0;
    }, 20_000);

    const after = new RequestProducer(brokers, topics.requests, 'restart');
    cleanups.push(() => after.disconnect());
    await after.produce(HALF, HALF);
    const sent = [...before.sent, ...after.sent];
    const allAnswered = await watcherAfter.waitForAll(sent, 120_000);

    // What the worker said about the outage, for the report and for a failure's message.
    const outage = warnings(worker).filter(
      (line) => worker.logs.indexOf(line) >= logLinesBeforeStop,
    );
    const outageSummary = summarize(outage);
    console.log(`[fault] worker A during and after the outage: ${outageSummary}`);
    // exactly-once: where each partition resumed, and the committed offset it read back to get
    // there (a partition sent back below what was committed answers those records twice).
    const resumed = worker.logs
      .slice(logLinesBeforeStop)
      .filter(
        (line) =>
          line.msg === 'partition open for transactions' ||
          String(line.msg).startsWith('the commit whose answer was lost'),
      )
      .map((line) =>
        line.msg === 'partition open for transactions'
          ? `[${String(line.partition)}] from ${String(line.from)} (read back ${String(line.committedOffset)})`
          : `[${String(line.partition)}] ${String(line.msg)} (offset ${String(line.uncertainOffset)})`,
      );
    if (resumed.length > 0) console.log(`[fault] worker A resumed: ${resumed.join(', ')}`);

    expect(allAnswered, worker.describe(30)).toBe(true);
    expect(worker.alive(), worker.describe(30)).toBe(true);
    expect(worker.logs.filter((line) => line.msg === 'worker started')).toHaveLength(1);
    expect((await worker.stop()).code, worker.describe()).toBe(0);
    await watcherAfter.stop();

    const figures = await collectFigures(
      `broker restart (${mode})`,
      brokers,
      groupId,
      topics,
      sent,
      {
        answeredBeforeStop,
        brokerDownMs: DOWN_MS,
        workerPid: worker.pid,
        workerWarnings: outage.length,
        uncommittedAfterRecovery,
      },
    );
    expectGuarantee(mode, figures, 2 * HALF);
    expect(
      uncommittedAfterRecovery,
      'requests answered after the broker came back whose offsets were still not committed 20 s later, with no new traffic',
    ).toBe(0);
  });
});

/** "message ×count" for each distinct warning or error message, in order of first appearance. */
function summarize(lines: { msg?: string }[]): string {
  const counts = new Map<string, number>();
  for (const line of lines) counts.set(String(line.msg), (counts.get(String(line.msg)) ?? 0) + 1);
  return counts.size === 0
    ? 'no warnings'
    : [...counts].map(([msg, count]) => `${msg} ×${count}`).join('; ');
}
