/**
 * The scoring client's Kafka edge (kafkajs): one producer for requests, one consumer in a group of
 * its own for the result and dead-letter topics.
 */
import { randomUUID } from 'node:crypto';
import {
  Kafka,
  logLevel as KafkaLogLevel,
  Partitioners,
  type Admin,
  type Consumer,
  type LogEntry,
  type Producer,
} from 'kafkajs';
import { StreamscoreError } from '../errors.js';
import type { Logger } from '../telemetry/logger.js';
import { silentLogger } from '../telemetry/logger.js';
import type { Answer, ScoringClientOptions, ScoringTransport } from './scoring-client.js';

/** kafkajs's own lines go to the client's logger: errors and warnings as such, the rest debug. */
function logCreator(log: Logger) {
  const child = log.child({ component: 'kafkajs' });
  return () =>
    ({ level, log: entry }: LogEntry) => {
      const { message, ...fields } = entry;
      if (level <= KafkaLogLevel.WARN) child.warn(fields, message);
      else child.debug(fields, message);
    };
}

interface TopicEnd {
  topic: string;
  partition: number;
  offset: string;
}

/**
 * The end offset of every partition of `topics`; TOPIC_MISSING names one of them or of
 * `alsoRequired` that is not there.
 */
async function endOffsets(
  admin: Admin,
  topics: readonly string[],
  alsoRequired: readonly string[],
): Promise<TopicEnd[]> {
  const existing = new Set(await admin.listTopics());
  const missing = [...alsoRequired, ...topics].filter((t) => !existing.has(t));
  if (missing.length > 0) {
    throw new StreamscoreError('TOPIC_MISSING', `topic(s) not found: ${missing.join(', ')}`, {
      details: { topics: missing },
    });
  }
  const ends: TopicEnd[] = [];
  for (const topic of topics) {
    for (const { partition, offset } of await admin.fetchTopicOffsets(topic)) {
      ends.push({ topic, partition, offset });
    }
  }
  return ends;
}

export function kafkajsTransport(options: ScoringClientOptions): ScoringTransport {
  const log = options.log ?? silentLogger;
  const kafka =
    options.kafka ??
    new Kafka({
      clientId: options.clientId ?? 'streamscore-client',
      brokers: options.brokers ?? [],
      logLevel: KafkaLogLevel.INFO,
      logCreator: logCreator(log),
    });
  if (options.kafka === undefined && (options.brokers ?? []).length === 0) {
    throw new StreamscoreError('CONFIG_INVALID', 'ScoringClient needs `brokers` or `kafka`');
  }
  const ownGroup = options.groupId === undefined;
  const groupId = options.groupId ?? `streamscore-client-${randomUUID()}`;
  const resultTopic = options.codec.resultTopic;
  const deadLetterTopics = [options.deadLetterTopic]
    .flat()
    .filter((t) => t !== resultTopic)
    .filter((t, i, all) => all.indexOf(t) === i);
  const answerTopics = [resultTopic, ...deadLetterTopics];
  const connectTimeoutMs = options.connectTimeoutMs ?? 60_000;

  let producer: Producer | null = null;
  let consumer: Consumer | null = null;

  async function disconnect(): Promise<void> {
    // Each step on its own: a failing one must not keep the others from running.
    try {
      await consumer?.disconnect();
    } catch (err) {
      log.warn({ err }, 'scoring client: consumer disconnect failed');
    }
    try {
      await producer?.disconnect();
    } catch (err) {
      log.warn({ err }, 'scoring client: producer disconnect failed');
    }
    if (ownGroup && consumer !== null) {
      // The group was made for this client only; leaving it behind would keep its committed
      // offsets on the broker until offsets.retention.minutes (7 days by default).
      const admin = kafka.admin();
      try {
        await admin.connect();
        await admin.deleteGroups([groupId]);
      } catch (err) {
        log.debug({ err, groupId }, 'scoring client: deleting its consumer group failed');
      } finally {
        await admin.disconnect().catch(() => undefined);
      }
    }
  }

  return {
    async start(onAnswer) {
      try {
        const admin = kafka.admin();
        let answerEnds: TopicEnd[];
        await admin.connect();
        try {
          answerEnds = await endOffsets(admin, answerTopics, [options.codec.topic]);
        } finally {
          await admin.disconnect();
        }

        producer = kafka.producer({
          // The Java client's partitioner: a key lands where other clients would put it.
          createPartitioner: Partitioners.DefaultPartitioner,
          allowAutoTopicCreation: false,
        });
        await producer.connect();

        const started = kafka.consumer({
          groupId,
          allowAutoTopicCreation: false,
          // Answers should not wait behind an idle fetch on another partition.
          maxWaitTimeInMs: 100,
        });
        consumer = started;
        // Partitions that returned a batch: their position is the consumer's own from then on.
        const reading = new Set<string>();
        const at = (topic: string, partition: number) => `${topic}\u0000${partition}`;
        // Why seek to offsets read before joining, instead of a fresh group's default (latest)?
        // A new group with no committed offset resolves "latest" only at its first fetch, after
        // the join, which can come after connect() resolved: a result written in between would
        // lie before that position and never be read, and its score() call would time out. The
        // end offsets above were read before connect() resolves, so every answer to a request
        // sent afterwards lies at or after them. kafkajs keeps a seek until the first fetch of
        // its partition; with autoCommit the seek is committed then too.
        const seekUnread = () => {
          for (const { topic, partition, offset } of answerEnds) {
            if (!reading.has(at(topic, partition))) started.seek({ topic, partition, offset });
          }
        };
        const joined = new Promise<void>((resolve, reject) => {
          const timer = setTimeout(
            () => reject(new Error(`did not join group ${groupId} within ${connectTimeoutMs} ms`)),
            connectTimeoutMs,
          );
          // Emitted after each join, before fetching starts. A consumer that kafkajs restarts
          // after a crash is a new one, without the seeks made before: make them again for the
          // partitions it has not read from yet.
          started.on(started.events.GROUP_JOIN, () => {
            seekUnread();
            clearTimeout(timer);
            resolve();
          });
          started.on(started.events.CRASH, ({ payload }) => {
            if (!payload.restart) {
              clearTimeout(timer);
              reject(payload.error);
            }
          });
        });
        await started.connect();
        // fromBeginning applies only to partitions without a seek: ones added to the topics
        // after the end offsets were read, which hold nothing older than this client.
        await started.subscribe({ topics: answerTopics, fromBeginning: true });
        const running = started.run({
          // Offsets advance per message handled: a batch cut short (stopping, rebalance) is read
          // again from its first unhandled message.
          eachBatchAutoResolve: false,
          eachBatch: async ({ batch, resolveOffset, heartbeat, isRunning, isStale }) => {
            reading.add(at(batch.topic, batch.partition));
            const kind: Answer['kind'] = batch.topic === resultTopic ? 'result' : 'deadLetter';
            for (const message of batch.messages) {
              if (!isRunning() || isStale()) return;
              await onAnswer({ kind, value: message.value, headers: flatHeaders(message.headers) });
              resolveOffset(message.offset);
            }
            await heartbeat();
          },
        });
        // The pattern kafkajs documents: seek right after run(), before its first fetch.
        seekUnread();
        await running;
        await joined;
        log.debug({ groupId, topics: answerTopics }, 'scoring client connected');
      } catch (err) {
        await disconnect();
        if (err instanceof StreamscoreError) throw err;
        throw new StreamscoreError(
          'KAFKA_UNAVAILABLE',
          `scoring client cannot connect: ${(err as Error).message}`,
          { cause: err, retriable: true },
        );
      }
    },

    async send(requests) {
      if (producer === null) throw new Error('the scoring client is not connected');
      await producer.send({
        topic: options.codec.topic,
        messages: requests.map((r) => ({ key: r.key, value: r.value, headers: r.headers })),
      });
    },

    close: disconnect,
  };
}

/** kafkajs headers (a repeated header is an array: the last one wins) as one value per name. */
function flatHeaders(
  headers: Record<string, Buffer | string | (Buffer | string)[] | undefined> | undefined,
): Answer['headers'] {
  const out: Answer['headers'] = {};
  for (const [name, value] of Object.entries(headers ?? {})) {
    out[name] = Array.isArray(value) ? value[value.length - 1] : value;
  }
  return out;
}
