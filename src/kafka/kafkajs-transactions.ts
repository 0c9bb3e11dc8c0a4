import { setTimeout as sleep } from 'node:timers/promises';
import { Partitioners, type Admin, type Kafka, type Producer } from 'kafkajs';
import { StreamscoreError } from '../errors.js';
import type { Logger } from '../telemetry/logger.js';
import { compressionType, topicMessages } from './kafkajs.js';
import type {
  OutboundRecord,
  PartitionTransactions,
  TopicPartition,
  TransactionalSink,
} from './types.js';

export interface KafkajsTransactionalSinkOptions {
  /** The consumer group whose offsets the transactions commit. */
  groupId: string;
  /** Transactional ids are `<prefix>.<topic>.<partition>`. */
  transactionalIdPrefix: string;
  compression: 'none' | 'gzip';
  /** Records of one transaction go out in produce requests of at most this many bytes. */
  maxSendBytes: number;
  /** The broker aborts a transaction left open this long (a crashed worker's). */
  transactionTimeoutMs?: number;
  log: Logger;
}

export function transactionalIdFor(prefix: string, tp: TopicPartition): string {
  return `${prefix}.${tp.topic}.${tp.partition}`;
}

/**
 * Transactions through kafkajs, whose TxnOffsetCommit predates KIP-447 (no group-generation
 * fencing): each input partition gets its own transactional producer, so whoever opens the
 * partition last owns its transactional id and a former owner's commits are refused.
 */
export class KafkajsTransactionalSink implements TransactionalSink {
  private admin: Promise<Admin> | null = null;
  private readonly open_ = new Set<KafkajsPartitionTransactions>();

  constructor(
    private readonly kafka: Kafka,
    private readonly options: KafkajsTransactionalSinkOptions,
  ) {}

  async open(tp: TopicPartition): Promise<PartitionTransactions> {
    const transactionalId = transactionalIdFor(this.options.transactionalIdPrefix, tp);
    const producer = this.kafka.producer({
      transactionalId,
      idempotent: true,
      maxInFlightRequests: 1,
      allowAutoTopicCreation: false,
      createPartitioner: Partitioners.DefaultPartitioner,
      transactionTimeout: this.options.transactionTimeoutMs ?? 60_000,
    });
    try {
      await producer.connect();
      // InitProducerId bumps the epoch: an earlier producer of this id is fenced from here on,
      // and the transaction it left open is aborted (or completed) before this returns.
      const fence = await producer.transaction();
      await fence.abort();
      const committedOffset = await this.committedOffset(tp);
      const partition = new KafkajsPartitionTransactions(
        producer,
        tp,
        committedOffset,
        this.options,
        () => this.committedOffset(tp),
        () => this.open_.delete(partition),
      );
      this.open_.add(partition);
      return partition;
    } catch (err) {
      await producer.disconnect().catch(() => undefined);
      throw new StreamscoreError(
        'KAFKA_UNAVAILABLE',
        `cannot open transactions for ${tp.topic}[${tp.partition}] (transactional id ${transactionalId}): ${(err as Error).message}`,
        { cause: err, retriable: true, details: { transactionalId } },
      );
    }
  }

  private async committedOffset(tp: TopicPartition): Promise<string | null> {
    this.admin ??= (async () => {
      const admin = this.kafka.admin();
      await admin.connect();
      return admin;
    })();
    let admin: Admin;
    try {
      admin = await this.admin;
    } catch (err) {
      this.admin = null;
      throw err;
    }
    const topics = await fetchOffsetsWhileLoading(admin, this.options.groupId, tp.topic);
    const found = topics
      .find((t) => t.topic === tp.topic)
      ?.partitions.find((p) => p.partition === tp.partition);
    // kafkajs asks only for the partitions its metadata lists: a reply without this one says
    // nothing about the offset (not "none committed"), so it is an error to retry.
    if (!found) {
      throw new StreamscoreError(
        'KAFKA_UNAVAILABLE',
        `the committed offsets of group ${this.options.groupId} came back without ${tp.topic}[${tp.partition}]`,
        { retriable: true },
      );
    }
    return found.offset !== '-1' ? found.offset : null;
  }

  async close(): Promise<void> {
    await Promise.all([...this.open_].map((p) => p.close()));
    const admin = this.admin;
    this.admin = null;
    if (admin) await (await admin.catch(() => null))?.disconnect();
  }
}

class KafkajsPartitionTransactions implements PartitionTransactions {
  private closed: Promise<void> | null = null;

  constructor(
    private readonly producer: Producer,
    private readonly tp: TopicPartition,
    readonly committedOffset: string | null,
    private readonly options: KafkajsTransactionalSinkOptions,
    readonly readCommittedOffset: () => Promise<string | null>,
    private readonly onClose: () => void,
  ) {}

  async commit(records: OutboundRecord[], offset: string): Promise<void> {
    const txn = await this.producer.transaction();
    let committing = false;
    try {
      for (const chunk of chunks(records, this.options.maxSendBytes)) {
        await txn.sendBatch({
          acks: -1,
          compression: compressionType(this.options.compression),
          topicMessages: topicMessages(chunk),
        });
      }
      await txn.sendOffsets({
        consumerGroupId: this.options.groupId,
        topics: [{ topic: this.tp.topic, partitions: [{ partition: this.tp.partition, offset }] }],
      });
      committing = true;
      await txn.commit();
    } catch (err) {
      // Best effort: if this fails too, the next owner's fencing (or the transaction timeout)
      // aborts it, unless the broker took the commit before its answer was lost.
      const aborted = txn.isActive()
        ? await txn.abort().then(
            () => true,
            () => false,
          )
        : false;
      if (committing && !aborted) {
        throw new StreamscoreError(
          'KAFKA_COMMIT_UNCERTAIN',
          `no answer to the commit of ${this.tp.topic}[${this.tp.partition}] up to offset ${offset}; the broker may have committed it: ${(err as Error).message}`,
          { cause: err, retriable: true, details: { offset } },
        );
      }
      throw err;
    }
  }

  close(): Promise<void> {
    this.closed ??= this.producer
      .disconnect()
      .catch((err: unknown) => {
        this.options.log.warn({ err, ...this.tp }, 'transactional producer did not disconnect');
      })
      .finally(this.onClose);
    return this.closed;
  }
}

const COORDINATOR_MOVING = new Set([
  'GROUP_LOAD_IN_PROGRESS',
  'GROUP_COORDINATOR_NOT_AVAILABLE',
  'NOT_COORDINATOR_FOR_GROUP',
]);

/** Retries a group coordinator still loading its offsets (after a broker start): kafkajs's admin does not. */
async function fetchOffsetsWhileLoading(
  admin: Admin,
  groupId: string,
  topic: string,
): ReturnType<Admin['fetchOffsets']> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await admin.fetchOffsets({ groupId, topics: [topic] });
    } catch (err) {
      // kafkajs's names for COORDINATOR_LOAD_IN_PROGRESS, COORDINATOR_NOT_AVAILABLE, NOT_COORDINATOR.
      const type = (err as { type?: string }).type ?? '';
      if (!COORDINATOR_MOVING.has(type) || attempt >= 20) throw err;
      await sleep(Math.min(1000, 50 * attempt));
    }
  }
}

function* chunks(records: OutboundRecord[], maxBytes: number): Generator<OutboundRecord[]> {
  let chunk: OutboundRecord[] = [];
  let bytes = 0;
  for (const record of records) {
    const size = record.value.length + (record.key?.length ?? 0);
    if (chunk.length > 0 && bytes + size > maxBytes) {
      yield chunk;
      chunk = [];
      bytes = 0;
    }
    chunk.push(record);
    bytes += size;
  }
  if (chunk.length > 0) yield chunk;
}
