/**
 * Fault 1: the worker process is killed with SIGKILL in the middle of a stream (no drain, no
 * commit, open transactions left as they are) and a new process takes over in the same group.
 */
import { describe, expect, inject, it } from 'vitest';
import { useCleanups } from './helpers/cleanups.js';
import { collectFigures, expectGuarantee } from './helpers/guarantees.js';
import {
  createFaultTopics,
  pollUntil,
  RequestProducer,
  TopicWatcher,
  uncommittedRecords,
} from './helpers/streams.js';
import {
  DELIVERY_MODES,
  startWorker,
  workerEnv,
  type WorkerProcess,
} from './helpers/worker-process.js';
import { uniqueTopic } from '../integration/helpers/kafka.js';

const brokers = inject('kafkaBrokers');
const TOTAL = 20_000;
const PARTITIONS = 4;
/** Requests per second offered while the worker runs: slower than it answers, so it is never done early. */
const RATE = 2_500;

const cleanups = useCleanups();

describe.each(DELIVERY_MODES)('kill -9 (%s)', (mode) => {
  it('a worker killed mid-stream is replaced by a new process in its group: nothing lost', async () => {
    const topics = await createFaultTopics(brokers, 'kill', PARTITIONS);
    const groupId = uniqueTopic('kill-group');
    const env = workerEnv({
      brokers,
      groupId,
      ...topics,
      mode,
    });
    const producer = new RequestProducer(brokers, topics.requests, 'kill');
    cleanups.push(() => producer.disconnect());
    // A stream, not a backlog: requests keep arriving while the worker is killed, so the kill
    // lands mid-stream (with a transaction open in exactly-once mode) and the replacement has work.
    const streaming = producer.stream(0, TOTAL, RATE);

    // read_committed, so in exactly-once mode "answered" means committed; in at-least-once mode
    // every result is visible at once.
    const watcher = await new TopicWatcher(brokers, topics.results, 'read_committed').start();
    cleanups.push(() => watcher.stop());

    const first = await startWorker('A', env);
    const midStream = await watcher.waitFor((w) => w.distinct.size >= TOTAL / 4, 90_000);
    expect(midStream, first.describe()).toBe(true);
    // Killed once it has committed something, so the next worker resumes from a commit rather
    // than from the beginning (at full speed the first quarter can take less than one interval).
    let uncommittedWhenKilled = TOTAL;
    let sentWhenKilled = 0;
    const committed = await pollUntil(async () => {
      sentWhenKilled = producer.sent.length;
      uncommittedWhenKilled = await uncommittedRecords(brokers, groupId, topics.requests);
      return uncommittedWhenKilled < sentWhenKilled;
    }, 30_000);
    expect(committed, first.describe()).toBe(true);
    const answeredWhenKilled = watcher.distinct.size;
    first.kill('SIGKILL');
    expect(await first.exited).toEqual({ code: null, signal: 'SIGKILL' });
    const answeredByFirst = watcher.distinct.size;

    const second: WorkerProcess = await startWorker('B', env);
    await streaming;
    const allAnswered = await watcher.waitForAll(producer.sent, 120_000);
    expect(allAnswered, second.describe()).toBe(true);
    expect((await second.stop()).code, second.describe()).toBe(0);
    await watcher.stop();

    const figures = await collectFigures(
      `kill -9 mid-stream (${mode})`,
      brokers,
      groupId,
      topics,
      producer.sent,
      {
        answeredWhenKilled,
        sentWhenKilled,
        committedWhenKilled: sentWhenKilled - uncommittedWhenKilled,
        answeredByFirst,
      },
    );
    expectGuarantee(mode, figures, TOTAL);
    // The kill came before the end of the stream, so the second worker had work left.
    expect(answeredByFirst).toBeLessThan(TOTAL);
  });
});
