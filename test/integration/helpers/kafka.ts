/** Helpers for tests that share one real broker (see ../global-setup.ts). */
import { randomBytes } from 'node:crypto';
import { Kafka, logLevel, type KafkaMessage } from 'kafkajs';

/**
 * A kafkajs client for tests. Silent by default: kafkajs logs responses it retries (coordinator
 * loading, CONCURRENT_TRANSACTIONS right after a transaction ends) at ERROR level, and failures
 * that matter reach the test as rejected promises anyway. Pass a level to debug one test.
 */
export function testKafka(
  brokers: string[],
  clientId = 'streamscore-test',
  level = logLevel.NOTHING,
): Kafka {
  return new Kafka({ clientId, brokers, logLevel: level });
}

/**
 * A topic (or group) name no other test or earlier run against the same broker has used. The
 * broker has auto.create.topics.enable=false, so tests create their topics with createTopics().
 */
export function uniqueTopic(prefix: string): string {
  return `${prefix}-${Date.now().toString(36)}-${randomBytes(4).toString('hex')}`;
}

export interface TopicSpec {
  topic: string;
  numPartitions: number;
}

/** Creates the topics and waits until every partition has a leader. Fails if one already exists. */
export async function createTopics(brokers: string[], topics: TopicSpec[]): Promise<void> {
  const admin = testKafka(brokers, 'streamscore-test-admin').admin();
  await admin.connect();
  try {
    const created = await admin.createTopics({
      waitForLeaders: true,
      topics: topics.map(({ topic, numPartitions }) => ({
        topic,
        numPartitions,
        replicationFactor: 1,
      })),
    });
    if (!created) throw new Error(`topics already exist: ${topics.map((t) => t.topic).join(', ')}`);
  } finally {
    await admin.disconnect();
  }
}

/** A worker's request, result and dead-letter topics. */
export interface WorkerTopics {
  requests: string;
  results: string;
  deadLetter: string;
}

/** Creates fresh request, result and dead-letter topics with `partitions` partitions each. */
export async function createWorkerTopics(
  brokers: string[],
  prefix: string,
  partitions: number,
): Promise<WorkerTopics> {
  const topics = {
    requests: uniqueTopic(`${prefix}-requests`),
    results: uniqueTopic(`${prefix}-results`),
    deadLetter: uniqueTopic(`${prefix}-dlq`),
  };
  await createTopics(
    brokers,
    Object.values(topics).map((topic) => ({ topic, numPartitions: partitions })),
  );
  return topics;
}

/** Creates one fresh topic per name (`<prefix>-<name>-<unique>`) and returns them by name. */
export async function freshTopics<Name extends string>(
  brokers: string[],
  prefix: string,
  names: readonly Name[],
  numPartitions: number,
): Promise<Record<Name, string>> {
  const topics = Object.fromEntries(
    names.map((name) => [name, uniqueTopic(`${prefix}-${name}`)]),
  ) as Record<Name, string>;
  await createTopics(
    brokers,
    names.map((name) => ({ topic: topics[name], numPartitions })),
  );
  return topics;
}

export interface ReadAllOptions {
  /** Stop as soon as this many messages arrived. */
  expected: number;
  /** Give up after this long and return what arrived. Default 30 s. */
  timeoutMs?: number;
  /** Default 'read_committed' (kafkajs's default): aborted transactional records are skipped. */
  isolationLevel?: 'read_committed' | 'read_uncommitted';
}

/** A kafkajs message with the partition it was read from. */
export type ReadMessage = KafkaMessage & { partition: number };

/**
 * Reads a topic from the beginning with a fresh consumer group until `expected` messages arrived
 * or the timeout passed, and returns them in arrival order (offset order within a partition).
 * Returning on timeout, rather than throwing, lets the test's assertion show what did arrive.
 */
export async function readAll(
  brokers: string[],
  topic: string,
  opts: ReadAllOptions,
): Promise<ReadMessage[]> {
  const consumer = testKafka(brokers, 'streamscore-test-reader').consumer({
    groupId: uniqueTopic('read-all'),
    readUncommitted: opts.isolationLevel === 'read_uncommitted',
    maxWaitTimeInMs: 100,
  });
  const messages: ReadMessage[] = [];
  let timer: NodeJS.Timeout | undefined;
  try {
    await consumer.connect();
    await consumer.subscribe({ topics: [topic], fromBeginning: true });
    await new Promise<void>((resolve, reject) => {
      timer = setTimeout(resolve, opts.timeoutMs ?? 30_000);
      if (opts.expected <= 0) resolve();
      consumer
        .run({
          eachMessage: async ({ partition, message }) => {
            messages.push({ ...message, partition });
            if (messages.length >= opts.expected) resolve();
          },
        })
        .catch(reject);
    });
  } finally {
    clearTimeout(timer);
    await consumer.disconnect();
  }
  return messages;
}
