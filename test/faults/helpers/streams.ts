/**
 * The Kafka side of the fault tests: topics, a fast request producer (each request with a unique
 * id), a live watcher of the result topic, and the final read of a topic to its end, which gives
 * the ids countFigures() needs.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { Partitioners, type Consumer, type KafkaMessage, type Producer } from 'kafkajs';
import { AvroCodec } from '../../../src/codec/avro.js';
import { loadDigitsDataset } from '../../../src/model/digits-data.js';
import {
  createWorkerTopics,
  testKafka,
  uniqueTopic,
  type WorkerTopics,
} from '../../integration/helpers/kafka.js';

export type FaultTopics = WorkerTopics;
/** Creates fresh request, result and dead-letter topics with `partitions` partitions each. */
export const createFaultTopics = createWorkerTopics;

const codec = new AvroCodec();
const CHUNK = 1000;

/**
 * Produces InferenceRequest records (held-out digits, float32 bytes) with the ids
 * `<prefix>-<from>` … `<prefix>-<from + count − 1>`, keyed by id so they spread over partitions.
 */
export class RequestProducer {
  private readonly producer: Producer;
  private readonly pixels = loadDigitsDataset().heldOut.map((example) => example.pixels);
  private connected: Promise<void> | undefined;
  /** Every id acknowledged by the broker, in the order produced. */
  readonly sent: string[] = [];

  constructor(
    brokers: string[],
    private readonly topic: string,
    private readonly prefix: string,
  ) {
    this.producer = testKafka(brokers, 'streamscore-fault-producer').producer({
      createPartitioner: Partitioners.DefaultPartitioner,
    });
  }

  /** Produces ids [from, from + count) in chunks of 1,000 and resolves once all are acknowledged. */
  async produce(from: number, count: number): Promise<void> {
    this.connected ??= this.producer.connect();
    await this.connected;
    for (let start = from; start < from + count; start += CHUNK) {
      const ids = Array.from(
        { length: Math.min(CHUNK, from + count - start) },
        (_, k) => `${this.prefix}-${start + k}`,
      );
      await this.producer.send({
        topic: this.topic,
        messages: ids.map((id, k) => ({
          key: id,
          value: codec.encodeRequest({
            id,
            model: null,
            modelVersion: null,
            requestedAt: Date.now(),
            inputs: [
              {
                name: 'pixels',
                shape: [64],
                data: this.pixels[(start + k) % this.pixels.length]!,
              },
            ],
          }),
        })),
      });
      this.sent.push(...ids);
    }
  }

  /**
   * Produces `total` requests from id `from` on at about `perSecond`, in chunks every 100 ms, as a
   * live stream would; resolves once all are acknowledged or `stop()` was called.
   */
  async stream(from: number, total: number, perSecond: number): Promise<void> {
    const chunk = Math.max(1, Math.round(perSecond / 10));
    const started = Date.now();
    for (let done = 0; done < total && !this.stopped; done += chunk) {
      await this.produce(from + done, Math.min(chunk, total - done));
      // Paced against the start, so a slow send is caught up rather than slowing the stream down.
      const due = started + ((done + chunk) / perSecond) * 1000;
      if (due > Date.now()) await sleep(due - Date.now());
    }
  }

  private stopped = false;

  /** Ends a running stream() after its current chunk. */
  stop(): void {
    this.stopped = true;
  }

  async disconnect(): Promise<void> {
    this.stopped = true;
    if (this.connected) await this.producer.disconnect().catch(() => {});
  }
}

/** The request id of a result or dead letter: its correlation-id header. */
export function correlationId(message: KafkaMessage): string | undefined {
  const header = message.headers?.['correlation-id'];
  const value = Array.isArray(header) ? header[header.length - 1] : header;
  return value === undefined ? undefined : value.toString();
}

/** A dead letter's identity as countFigures() wants it: request id, else its source coordinates. */
export function deadLetterId(message: KafkaMessage): string {
  const id = correlationId(message);
  if (id !== undefined) return id;
  const header = (name: string): string => String(message.headers?.[name] ?? '?');
  return `${header('streamscore.source.topic')}/${header('streamscore.source.partition')}/${header('streamscore.source.offset')}`;
}

export type Isolation = 'read_committed' | 'read_uncommitted';

/**
 * Follows a topic from the beginning in the background (a fresh group), collecting the
 * correlation ids of its records. For deciding when to inject a fault and when the stream is
 * done; the figures come from readIds() once the workers stopped.
 */
export class TopicWatcher {
  /** Correlation id of every record read so far, duplicates included. */
  readonly ids: string[] = [];
  readonly distinct = new Set<string>();
  private readonly consumer: Consumer;
  private readonly listeners = new Set<() => void>();
  private running: Promise<void> | undefined;

  constructor(
    brokers: string[],
    private readonly topic: string,
    isolation: Isolation,
  ) {
    this.consumer = testKafka(brokers, 'streamscore-fault-watcher').consumer({
      groupId: uniqueTopic('fault-watch'),
      readUncommitted: isolation === 'read_uncommitted',
      maxWaitTimeInMs: 100,
    });
  }

  async start(): Promise<this> {
    await this.consumer.connect();
    await this.consumer.subscribe({ topics: [this.topic], fromBeginning: true });
    this.running = this.consumer.run({
      autoCommit: false,
      eachBatch: async ({ batch }) => {
        for (const message of batch.messages) {
          const id = correlationId(message) ?? '?';
          this.ids.push(id);
          this.distinct.add(id);
        }
        for (const listener of this.listeners) listener();
      },
    });
    await this.running;
    return this;
  }

  /** Resolves true once `predicate` holds, false after `timeoutMs`. */
  waitFor(predicate: (watcher: this) => boolean, timeoutMs: number): Promise<boolean> {
    if (predicate(this)) return Promise.resolve(true);
    return new Promise((resolve) => {
      const check = (): void => {
        if (!predicate(this)) return;
        finish(true);
      };
      const timer = setTimeout(() => finish(false), timeoutMs);
      const finish = (result: boolean): void => {
        clearTimeout(timer);
        this.listeners.delete(check);
        resolve(result);
      };
      this.listeners.add(check);
    });
  }

  /** Resolves true once every id in `ids` was seen, false after `timeoutMs`. */
  waitForAll(ids: readonly string[], timeoutMs: number): Promise<boolean> {
    return this.waitFor(() => ids.every((id) => this.distinct.has(id)), timeoutMs);
  }

  async stop(): Promise<void> {
    this.listeners.clear();
    await this.consumer.disconnect().catch(() => {});
  }
}

export interface ReadIdsResult {
  /** Correlation id (or deadLetterId()) of every record read, duplicates included. */
  ids: string[];
  /** Whether every partition was read to its end offset (false: the timeout passed first). */
  complete: boolean;
}

/**
 * Reads a whole topic from the beginning with a fresh group, read_committed by default, up to
 * the end offsets it has when the read starts (the last stable offset: open transactions are
 * not waited for beyond `timeoutMs`). Call it once the workers stopped, so nothing is added.
 */
export async function readIds(
  brokers: string[],
  topic: string,
  opts: { isolation?: Isolation; timeoutMs?: number; identify?: (m: KafkaMessage) => string } = {},
): Promise<ReadIdsResult> {
  const kafka = testKafka(brokers, 'streamscore-fault-reader');
  const admin = kafka.admin();
  await admin.connect();
  const ends = new Map<number, number>();
  try {
    for (const { partition, high } of await admin.fetchTopicOffsets(topic)) {
      ends.set(partition, Number(high));
    }
  } finally {
    await admin.disconnect();
  }
  const identify = opts.identify ?? ((m: KafkaMessage) => correlationId(m) ?? '?');
  const ids: string[] = [];
  // Next offset to read per partition; batches that held only control records or aborted
  // records move it too (END_BATCH_PROCESS), so transaction markers at the end do not stall it.
  const next = new Map<number, number>();
  const atEnd = (): boolean =>
    [...ends].every(([partition, end]) => end === 0 || (next.get(partition) ?? 0) >= end);
  if (atEnd()) return { ids, complete: true };

  const consumer = kafka.consumer({
    groupId: uniqueTopic('fault-read'),
    readUncommitted: opts.isolation === 'read_uncommitted',
    maxWaitTimeInMs: 100,
  });
  let timer: NodeJS.Timeout | undefined;
  let complete = false;
  try {
    await consumer.connect();
    await consumer.subscribe({ topics: [topic], fromBeginning: true });
    await new Promise<void>((resolve, reject) => {
      timer = setTimeout(resolve, opts.timeoutMs ?? 60_000);
      consumer.on(consumer.events.END_BATCH_PROCESS, ({ payload }) => {
        const last = Number(payload.lastOffset) + 1;
        if (last > (next.get(payload.partition) ?? 0)) next.set(payload.partition, last);
        if (atEnd()) {
          complete = true;
          resolve();
        }
      });
      consumer
        .run({
          autoCommit: false,
          eachBatch: async ({ batch }) => {
            for (const message of batch.messages) ids.push(identify(message));
          },
        })
        .catch(reject);
    });
  } finally {
    clearTimeout(timer);
    await consumer.disconnect();
  }
  return { ids, complete };
}

/** Results (by correlation id) and dead letters of a finished fault run, read_committed. */
export async function readOutcome(
  brokers: string[],
  topics: FaultTopics,
  timeoutMs = 60_000,
): Promise<{ resultIds: string[]; deadLetterIds: string[]; complete: boolean }> {
  const results = await readIds(brokers, topics.results, { timeoutMs });
  const deadLetters = await readIds(brokers, topics.deadLetter, {
    timeoutMs,
    identify: deadLetterId,
  });
  return {
    resultIds: results.ids,
    deadLetterIds: deadLetters.ids,
    complete: results.complete && deadLetters.complete,
  };
}

/**
 * Records of `topic` the group has not committed past: the sum over partitions of the end
 * offset minus the committed offset (none committed counts from 0). Once the last worker
 * stopped after answering everything, a worker that commits what it answered leaves 0.
 */
export async function uncommittedRecords(
  brokers: string[],
  groupId: string,
  topic: string,
): Promise<number> {
  const admin = testKafka(brokers, 'streamscore-fault-admin').admin();
  await admin.connect();
  try {
    const [ends, [committed]] = await Promise.all([
      admin.fetchTopicOffsets(topic),
      admin.fetchOffsets({ groupId, topics: [topic] }),
    ]);
    const at = new Map(committed?.partitions.map((p) => [p.partition, Number(p.offset)]));
    return ends.reduce(
      (sum, { partition, high }) => sum + Number(high) - Math.max(0, at.get(partition) ?? 0),
      0,
    );
  } finally {
    await admin.disconnect();
  }
}

/** Polls `check` every `intervalMs` until it returns true (resolves true) or `timeoutMs` passed. */
export async function pollUntil(
  check: () => Promise<boolean>,
  timeoutMs: number,
  intervalMs = 100,
): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return true;
    if (Date.now() >= deadline) return false;
    await sleep(intervalMs);
  }
}
