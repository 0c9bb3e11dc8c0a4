import {
  CompressionTypes,
  Kafka,
  logLevel as KafkaLogLevel,
  Partitioners,
  type Consumer,
  type IHeaders,
  type KafkaMessage,
  type LogEntry,
  type Producer,
  type TopicMessages,
} from 'kafkajs';
import type { StreamscoreConfig } from '../config/schema.js';
import { StreamscoreError } from '../errors.js';
import type { Logger } from '../telemetry/logger.js';
import type {
  InboundRecord,
  OutboundRecord,
  RecordHeaders,
  RecordSink,
  RecordSource,
  SourceHandlers,
  SourceListeners,
  TopicPartition,
  TopicPartitionLag,
  TopicPartitionOffset,
} from './types.js';

/** kafkajs's chatty INFO lines (joins, starts) go to debug; warnings and errors stay. */
function logCreator(log: Logger) {
  const child = log.child({ component: 'kafkajs' });
  return () =>
    ({ level, log: entry }: LogEntry) => {
      const { message, ...fields } = entry;
      // "Response X" errors are protocol replies kafkajs retries itself (coordinator loading,
      // leader moved): worth seeing, not alarming. Failures that matter surface as thrown errors.
      const retried = message.startsWith('Response ');
      if (level <= KafkaLogLevel.ERROR && !retried) child.error(fields, message);
      else if (level <= KafkaLogLevel.WARN) child.warn(fields, message);
      else child.debug(fields, message);
    };
}

export function createKafka(config: StreamscoreConfig['kafka'], log: Logger): Kafka {
  return new Kafka({
    clientId: config.clientId,
    brokers: config.brokers,
    connectionTimeout: config.connectionTimeoutMs,
    requestTimeout: config.requestTimeoutMs,
    logLevel: KafkaLogLevel.INFO,
    logCreator: logCreator(log),
  });
}

function toHeaders(headers: IHeaders | undefined): RecordHeaders {
  const out: RecordHeaders = {};
  for (const [name, value] of Object.entries(headers ?? {})) {
    // A repeated header arrives as an array; the last one wins, as in most clients' lastHeader().
    const last = Array.isArray(value) ? value[value.length - 1] : value;
    if (last !== undefined) out[name] = Buffer.isBuffer(last) ? last : Buffer.from(last);
  }
  return out;
}

/** A kafkajs message as the worker sees it (also used by `streamscore replay`). */
export function toRecord(topic: string, partition: number, message: KafkaMessage): InboundRecord {
  return {
    topic,
    partition,
    offset: message.offset,
    key: message.key,
    value: message.value,
    headers: toHeaders(message.headers),
    timestamp: Number(message.timestamp),
    trace: undefined, // every record with the same shape
  };
}

export interface KafkajsSourceOptions {
  groupId: string;
  topics: string[];
  fromBeginning: boolean;
  sessionTimeoutMs: number;
  fetchMaxWaitMs: number;
  fetchMaxBytesPerPartition: number;
  log: Logger;
}

/**
 * Consumer group source. kafkajs advances its fetch position when eachBatch returns
 * (eachBatchAutoResolve), but never commits on its own (autoCommit: false): the worker commits
 * what the broker has acknowledged through commit().
 */
export class KafkajsSource implements RecordSource {
  private readonly consumer: Consumer;
  private readonly log: Logger;
  private assignment: TopicPartition[] = [];
  private stopped: Promise<void> | null = null;
  private paused = false;
  private readonly held = new Map<string, TopicPartition>();
  private readonly watchers = new Set<SourceListeners>();
  private readonly lags = new Map<string, TopicPartitionLag>();

  constructor(
    kafka: Kafka,
    private readonly options: KafkajsSourceOptions,
  ) {
    this.log = options.log.child({ component: 'source' });
    this.consumer = kafka.consumer({
      groupId: options.groupId,
      sessionTimeout: options.sessionTimeoutMs,
      heartbeatInterval: Math.min(3000, Math.floor(options.sessionTimeoutMs / 3)),
      allowAutoTopicCreation: false,
      maxWaitTimeInMs: options.fetchMaxWaitMs,
      maxBytesPerPartition: options.fetchMaxBytesPerPartition,
    });
  }

  watch(listeners: SourceListeners): () => void {
    this.watchers.add(listeners);
    return () => this.watchers.delete(listeners);
  }

  /** The lag of every assigned partition that returned records since it was assigned. */
  consumerLag(): TopicPartitionLag[] {
    return [...this.lags.values()];
  }

  /** Calls the run() handlers, then every watcher; a throwing watcher is logged, not fatal. */
  private notify(handlers: SourceHandlers, call: (listeners: SourceListeners) => void): void {
    call(handlers);
    for (const watcher of this.watchers) {
      try {
        call(watcher);
      } catch (err) {
        this.log.warn({ err }, 'source listener failed');
      }
    }
  }

  async run(handlers: SourceHandlers): Promise<void> {
    const { consumer } = this;
    consumer.on(consumer.events.GROUP_JOIN, ({ payload }) => {
      // A consumer restarted after a crash has a new consumer group, without our pause state.
      this.applyPauses();
      this.assignment = Object.entries(payload.memberAssignment).flatMap(([topic, partitions]) =>
        partitions.map((partition) => ({ topic, partition })),
      );
      const assigned = new Set(this.assignment.map((tp) => `${tp.topic}\u0000${tp.partition}`));
      for (const key of this.lags.keys()) if (!assigned.has(key)) this.lags.delete(key);
      this.notify(handlers, (l) => l.onAssignment?.(this.assignment));
    });
    // kafkajs disconnects before it reports a crash (and on stop()); either way the consumer is
    // out of its group until it has restarted and rejoined (GROUP_JOIN again).
    consumer.on(consumer.events.DISCONNECT, () => {
      this.notify(handlers, (l) => l.onConnectionLost?.('consumer disconnected'));
    });
    consumer.on(consumer.events.CRASH, ({ payload }) => {
      const reason = `consumer crashed: ${payload.error.message}${payload.restart ? '; restarting' : ''}`;
      this.notify(handlers, (l) => l.onConnectionLost?.(reason));
      if (!payload.restart) handlers.onFatal?.(payload.error);
    });
    try {
      await consumer.connect();
      await consumer.subscribe({
        topics: this.options.topics,
        fromBeginning: this.options.fromBeginning,
      });
    } catch (err) {
      throw new StreamscoreError(
        'KAFKA_UNAVAILABLE',
        `cannot join consumer group ${this.options.groupId}: ${(err as Error).message}`,
        { cause: err, retriable: true },
      );
    }
    await consumer.run({
      autoCommit: false,
      eachBatchAutoResolve: true,
      eachBatch: async ({ batch, heartbeat, isRunning, isStale }) => {
        if (batch.messages.length === 0) return;
        // Fetched before the partition was held: it will be read again once released.
        const key = `${batch.topic}\u0000${batch.partition}`;
        if (this.held.has(key)) return;
        const tp = { topic: batch.topic, partition: batch.partition };
        const lastOffset = Number(batch.messages[batch.messages.length - 1]!.offset);
        const lag = Math.max(0, Number(batch.highWatermark) - lastOffset - 1);
        this.lags.set(key, { ...tp, lag });
        this.notify(handlers, (l) => l.onLag?.(tp, lag));
        const records = batch.messages.map((m) => toRecord(batch.topic, batch.partition, m));
        await handlers.onRecords(records, { heartbeat, isStale: () => isStale() || !isRunning() });
      },
    });
  }

  pause(): void {
    this.paused = true;
    this.applyPauses();
  }

  resume(): void {
    this.paused = false;
    this.applyPauses();
  }

  hold(partitions: TopicPartition[]): void {
    for (const tp of partitions) this.held.set(`${tp.topic}\u0000${tp.partition}`, tp);
    this.applyPauses();
  }

  release(partition: TopicPartition, offset: string | null): void {
    this.held.delete(`${partition.topic}\u0000${partition.partition}`);
    // kafkajs applies a seek before its next fetch of the partition, without committing it.
    if (offset !== null) {
      try {
        this.consumer.seek({ ...partition, offset });
      } catch (err) {
        // Restarting after a crash: the new consumer group starts from the committed offsets,
        // which is where this seek pointed (exactly-once reads them after fencing).
        this.log.debug({ err, ...partition, offset }, 'seek not applied: consumer restarting');
      }
    }
    this.applyPauses();
  }

  /**
   * kafkajs keeps one pause state per topic and a pause of some partitions clears a whole-topic
   * pause, so the state is always rebuilt from ours: everything while paused, else the held
   * partitions only. Synchronous, so no fetch can start in between.
   */
  private applyPauses(): void {
    try {
      for (const topic of new Set(this.options.topics)) {
        if (this.paused) {
          this.consumer.pause([{ topic }]);
          continue;
        }
        this.consumer.resume([{ topic }]);
        const held = [...this.held.values()].filter((tp) => tp.topic === topic);
        if (held.length > 0)
          this.consumer.pause([{ topic, partitions: held.map((tp) => tp.partition) }]);
      }
    } catch (err) {
      // Between a crash and its automatic restart kafkajs has no consumer group to pause
      // ("Consumer group was not initialized"); the state is applied again on the next join.
      this.log.debug({ err }, 'pause state not applied now; applied again on rejoin');
    }
  }

  async commit(offsets: TopicPartitionOffset[]): Promise<void> {
    // kafkajs resolves without committing (a debug line, no error) while its consumer loop is
    // not running, e.g. when it crashed during the commit's retries and is restarting. Only the
    // COMMIT_OFFSETS event says the broker took it; commits are serialised, so it is this one's.
    let confirmed = false;
    const stopListening = this.consumer.on(this.consumer.events.COMMIT_OFFSETS, () => {
      confirmed = true;
    });
    try {
      await this.consumer.commitOffsets(offsets);
    } finally {
      stopListening();
    }
    if (!confirmed) {
      throw new StreamscoreError(
        'KAFKA_UNAVAILABLE',
        'offsets not committed: the consumer is not running (restarting after a crash)',
        { retriable: true },
      );
    }
  }

  stop(): Promise<void> {
    this.stopped ??= this.consumer.disconnect().catch((err: unknown) => {
      this.log.warn({ err }, 'consumer did not disconnect cleanly');
    });
    return this.stopped;
  }
}

export interface KafkajsSinkOptions {
  compression: 'none' | 'gzip';
  log: Logger;
}

export function compressionType(compression: 'none' | 'gzip'): CompressionTypes {
  return compression === 'gzip' ? CompressionTypes.GZIP : CompressionTypes.None;
}

/** One sendBatch entry per topic, records in their order. */
export function topicMessages(records: OutboundRecord[]): TopicMessages[] {
  const topics = new Map<string, OutboundRecord[]>();
  for (const record of records) {
    const list = topics.get(record.topic);
    if (list) list.push(record);
    else topics.set(record.topic, [record]);
  }
  return [...topics].map(([topic, list]) => ({
    topic,
    messages: list.map((r) => ({ key: r.key, value: r.value, headers: r.headers })),
  }));
}

/** Idempotent producer, acks=all: send() resolves only once every record is acknowledged. */
export class KafkajsSink implements RecordSink {
  private producer: Producer;
  private connected: Promise<void> | null = null;
  private closed: Promise<void> | null = null;

  constructor(
    private readonly kafka: Kafka,
    private readonly options: KafkajsSinkOptions,
  ) {
    this.producer = this.newProducer();
  }

  private newProducer(): Producer {
    return this.kafka.producer({
      idempotent: true,
      // kafkajs keeps per-partition sequence numbers; one request in flight keeps them in order.
      maxInFlightRequests: 1,
      allowAutoTopicCreation: false,
      createPartitioner: Partitioners.DefaultPartitioner,
    });
  }

  connect(): Promise<void> {
    this.connected ??= this.producer.connect();
    return this.connected;
  }

  async reset(): Promise<void> {
    const old = this.producer;
    this.producer = this.newProducer();
    this.connected = null;
    await old.disconnect().catch((err: unknown) => {
      this.options.log.warn({ err }, 'old producer did not disconnect cleanly');
    });
    await this.connect();
  }

  async send(records: OutboundRecord[]): Promise<void> {
    if (records.length === 0) return;
    await this.connect();
    await this.producer.sendBatch({
      acks: -1,
      compression: compressionType(this.options.compression),
      topicMessages: topicMessages(records),
    });
  }

  close(): Promise<void> {
    this.closed ??= this.producer.disconnect().catch((err: unknown) => {
      this.options.log.warn({ err }, 'producer did not disconnect cleanly');
    });
    return this.closed;
  }
}

/** Fails fast, naming the topics, when the worker's topics do not exist (auto-creation is off). */
export async function checkTopics(kafka: Kafka, topics: string[]): Promise<void> {
  const admin = kafka.admin();
  try {
    await admin.connect();
    const existing = new Set(await admin.listTopics());
    const missing = [...new Set(topics)].filter((t) => !existing.has(t));
    if (missing.length > 0) {
      throw new StreamscoreError(
        'TOPIC_MISSING',
        `topic(s) ${missing.join(', ')} do not exist. Fix: create them (e.g. streamscore topics create) or change topics.* in the configuration.`,
        { details: { missing } },
      );
    }
  } catch (err) {
    if (err instanceof StreamscoreError) throw err;
    throw new StreamscoreError(
      'KAFKA_UNAVAILABLE',
      `cannot reach Kafka to check topics: ${(err as Error).message}`,
      { cause: err, retriable: true },
    );
  } finally {
    await admin.disconnect();
  }
}

/** Creates topics that do not exist yet (demo, tests, `streamscore topics create`). */
export async function ensureTopics(
  kafka: Kafka,
  topics: { topic: string; numPartitions: number }[],
): Promise<string[]> {
  const admin = kafka.admin();
  try {
    await admin.connect();
    const existing = new Set(await admin.listTopics());
    const create = topics.filter((t) => !existing.has(t.topic));
    if (create.length > 0) {
      await admin.createTopics({
        waitForLeaders: true,
        topics: create.map((t) => ({
          topic: t.topic,
          numPartitions: t.numPartitions,
          replicationFactor: -1,
        })),
      });
    }
    return create.map((t) => t.topic);
  } finally {
    await admin.disconnect();
  }
}
