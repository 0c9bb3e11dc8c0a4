/**
 * Scoring without Kafka, through the very InferenceWorker the service runs: the same decoding,
 * validation, model routing (catalog, canary), batching, encoding and dead letters, with the
 * codecs (`TopicCodecs`: Schema Registry framing, field mappings) and the models started as the
 * service starts them (`startServing`). A record's topic picks its codec, so it must be one of
 * topics.requests (any other is dead-lettered, DECODE_FAILED). Only the edges differ: records are
 * pushed into an in-memory RecordSource and answers are caught on their way to the RecordSink.
 *
 * `startLocalPipeline` is what `streamscore score --local` uses: records in, one outcome per
 * record out, in input order. `startPipeline` is the layer under it for callers that bring their
 * own records and sink (`streamscore replay` reads a range of a request topic with its partitions
 * and offsets and sends the answers to Kafka).
 *
 * A record counts as answered when the worker commits past its offset, as it would commit to the
 * consumer group: its result or dead letter was acknowledged by the sink, or it was left out
 * because nothing of it could be sent (over kafka.maxRecordBytes even without its value).
 */
import type { RequestCodecs, TopicCodec } from '../codec/types.js';
import type { StreamscoreConfig } from '../config/schema.js';
import type {
  BatchControl,
  InboundRecord,
  OutboundRecord,
  RecordSink,
  RecordSource,
  SourceHandlers,
  TopicPartition,
  TopicPartitionOffset,
} from '../kafka/types.js';
import type { ModelInfo } from '../model/types.js';
import { startScoring } from '../serving.js';
import type { Logger } from '../telemetry/logger.js';
import { HEADER } from '../worker/headers.js';
import { InferenceWorker } from '../worker/worker.js';

/** One request to score: the topic decides the default model (model.byTopic) as in the service. */
export interface LocalRecord {
  topic: string;
  key: Buffer | null;
  value: Buffer;
}

/** What the service would have produced for one request: its result or its dead letter. */
export type LocalOutcome =
  | { kind: 'result'; value: Buffer; headers: Record<string, string | Buffer> }
  | { kind: 'deadLetter'; code: string; message: string; headers: Record<string, string | Buffer> };

export interface LocalPipeline {
  /**
   * Scores the records and resolves with one outcome per record, in input order. Calls may
   * overlap; their records share batches as concurrent requests do in the service.
   */
  score(records: LocalRecord[]): Promise<LocalOutcome[]>;
  /** Answers what was handed in (within shutdown.drainTimeoutMs), frees the models. Idempotent. */
  close(): Promise<void>;
}

export interface LocalPipelineOptions {
  log: Logger;
}

/** The pipeline behind `streamscore score --local`: every answer is acknowledged at once. */
export async function startLocalPipeline(
  config: StreamscoreConfig,
  { log }: LocalPipelineOptions,
): Promise<LocalPipeline> {
  const pipeline = await startPipeline(config, { log });
  // One partition per topic; offsets count up across calls, so the worker sees a stream.
  const nextOffset = new Map<string, bigint>();
  return {
    async score(records) {
      const now = Date.now();
      const inbound = records.map((r): InboundRecord => {
        const offset = nextOffset.get(r.topic) ?? 0n;
        nextOffset.set(r.topic, offset + 1n);
        return {
          topic: r.topic,
          partition: 0,
          offset: offset.toString(),
          key: r.key,
          value: r.value,
          headers: {},
          timestamp: now,
        };
      });
      const answers = await pipeline.submit(inbound);
      return answers.map((answer) => toOutcome(answer, config));
    },
    close: () => pipeline.close(),
  };
}

/** A record as the worker answered it: its result or dead letter as acknowledged by the sink. */
export interface Answer {
  record: InboundRecord;
  /**
   * null: nothing could be sent for it (over kafka.maxRecordBytes even as a dead letter without
   * its value); the worker logged and counted it (KAFKA_RECORD_REJECTED, dropped) and moved on.
   */
  sent: OutboundRecord | null;
}

export interface PipelineOptions {
  log: Logger;
  /**
   * Where results and dead letters go; the pipeline sees them once this sink acknowledged them.
   * Default: nowhere, acknowledged at once (the answers are only handed back by submit()).
   */
  sink?: RecordSink;
  /** Results go to this topic instead of topics.results (replay --into). */
  resultTopic?: string;
}

export interface Pipeline {
  /** The default model's name and version (model.version as resolved at start). */
  readonly model: ModelInfo;
  /**
   * Hands the records to the worker and resolves once each is answered, in the order given.
   * Within a partition offsets must grow from call to call, as a consumer reads them.
   */
  submit(records: InboundRecord[]): Promise<Answer[]>;
  /** Drains (shutdown.drainTimeoutMs), closes the sink and frees the models. Idempotent. */
  close(): Promise<void>;
}

/** Records handed to the worker per onRecords call, so backpressure can pause between them. */
const CHUNK = 500;

/**
 * Starts the models (`startServing`) and an InferenceWorker on an in-memory source. Shadow
 * results and rollout events are not written (topics.shadow and topics.events are ignored): this
 * pipeline answers requests, it does not take part in a canary's record.
 */
export async function startPipeline(
  config: StreamscoreConfig,
  options: PipelineOptions,
): Promise<Pipeline> {
  const { log } = options;
  const { codecs: topicCodecs, serving } = await startScoring(config, { log });
  const resultTopic = options.resultTopic ?? config.topics.results;
  const codecs = options.resultTopic ? resultsInto(topicCodecs, resultTopic) : topicCodecs;
  const answers = new Answers();
  const source = new MemorySource({
    onCommit: (offsets) => answers.committed(offsets),
    onError: (records, err) => answers.fail(records, err),
  });
  const sink = new ObservedSink(options.sink ?? new AcknowledgingSink(), (sent) =>
    answers.sent(sent),
  );
  let worker: InferenceWorker;
  try {
    worker = new InferenceWorker({
      source,
      sink,
      codecs,
      model: serving.model,
      log,
      rollout: serving.rollout,
      catalog: serving.catalog,
      options: {
        resultTopic,
        deadLetterTopic: config.topics.deadLetter,
        failedTopic: config.topics.failed ?? undefined,
        maxAttempts: config.delivery.maxAttempts,
        maxBatchSize: serving.batchSize,
        maxBatchBytes: config.batching.maxBatchBytes,
        maxDelayMs: config.batching.maxDelayMs,
        maxQueued: config.batching.maxQueued,
        maxSendBytes: config.kafka.maxSendBytes,
        maxRecordBytes: config.kafka.maxRecordBytes,
        maxPayloadBytes: config.limits.maxPayloadBytes,
        // Commits are how answered records are told apart here: each acknowledged send commits.
        commitIntervalMs: 0,
        drainTimeoutMs: config.shutdown.drainTimeoutMs,
        shadowTopic: null,
        eventsTopic: null,
      },
    });
    await worker.start();
  } catch (err) {
    await serving.dispose();
    throw err;
  }

  let closed: Promise<void> | null = null;
  return {
    model: serving.model.info,
    submit(records) {
      if (closed) return Promise.reject(new PipelineClosed(records.length));
      const answered = answers.expect(records);
      source.push(records);
      return answered;
    },
    close() {
      closed ??= (async () => {
        try {
          await worker.stop();
        } finally {
          answers.fail(source.takeUndelivered(), new PipelineClosed());
          answers.closed();
          await serving.dispose();
        }
      })();
      return closed;
    },
  };
}

/**
 * The service's codecs with every topic's results sent to `topic` instead (replay --into): the
 * same decoding, mapping and result encoding (framed with the result schema id registered for
 * the configured result topic, when that one is framed).
 */
function resultsInto(codecs: RequestCodecs, topic: string): RequestCodecs {
  const redirected = new Map<TopicCodec, TopicCodec>();
  return {
    forTopic(requestTopic) {
      const codec = codecs.forTopic(requestTopic);
      let into = redirected.get(codec);
      if (!into) {
        into = {
          topic: codec.topic,
          resultTopic: topic,
          decodeRequest: (value) => codec.decodeRequest(value),
          encodeResult: (result, request, info) => codec.encodeResult(result, request, info),
        };
        redirected.set(codec, into);
      }
      return into;
    },
    resultTopics: [topic],
    ...(codecs.prepare ? { prepare: (records, abandon) => codecs.prepare!(records, abandon) } : {}),
  };
}

/** The record was handed in but the pipeline closed before it was answered. */
export class PipelineClosed extends Error {
  constructor(count?: number) {
    super(
      count === undefined
        ? 'the pipeline closed before the record was answered'
        : `the pipeline is closed; ${count} record(s) not scored`,
    );
    this.name = 'PipelineClosed';
  }
}

function toOutcome({ sent }: Answer, config: StreamscoreConfig): LocalOutcome {
  if (!sent) {
    return {
      kind: 'deadLetter',
      code: 'KAFKA_RECORD_REJECTED',
      message: `nothing could be sent for the record: over kafka.maxRecordBytes=${config.kafka.maxRecordBytes} even without its value`,
      headers: {},
    };
  }
  const code = sent.headers[HEADER.errorCode];
  if (code === undefined) return { kind: 'result', value: sent.value, headers: sent.headers };
  return {
    kind: 'deadLetter',
    code: String(code),
    message: String(sent.headers[HEADER.errorMessage] ?? ''),
    headers: sent.headers,
  };
}

const partitionKey = (tp: TopicPartition) => `${tp.topic}\u0000${tp.partition}`;

interface Waiter {
  record: InboundRecord;
  offset: bigint;
  settle(sent: OutboundRecord | null): void;
  fail(err: Error): void;
}

/**
 * Matches what the sink acknowledged to the records handed in (through `origin`), and settles
 * each record once the worker commits past its offset.
 */
class Answers {
  /** Per partition, in offset order: the records not answered yet. */
  private readonly waiting = new Map<string, Waiter[]>();
  /** Per partition and offset: the last answer acknowledged for that record. */
  private readonly acknowledged = new Map<string, Map<bigint, OutboundRecord>>();

  /** Per partition: the highest offset handed in so far. */
  private readonly highest = new Map<string, bigint>();

  /**
   * Registers the records; the promise resolves once all are answered, in the order given. An
   * offset not above the partition's highest so far is refused: the worker would skip it as read
   * twice, and it would never be answered.
   */
  expect(records: InboundRecord[]): Promise<Answer[]> {
    const highest = new Map<string, bigint>();
    for (const record of records) {
      const key = partitionKey(record);
      const last = highest.get(key) ?? this.highest.get(key);
      const offset = BigInt(record.offset);
      if (last !== undefined && offset <= last) {
        return Promise.reject(
          new RangeError(
            `${record.topic}[${record.partition}] offset ${record.offset} is not above ${last}, handed in before`,
          ),
        );
      }
      highest.set(key, offset);
    }
    for (const [key, offset] of highest) this.highest.set(key, offset);
    return Promise.all(
      records.map(
        (record) =>
          new Promise<Answer>((resolve, reject) => {
            const key = partitionKey(record);
            let list = this.waiting.get(key);
            if (!list) this.waiting.set(key, (list = []));
            list.push({
              record,
              offset: BigInt(record.offset),
              settle: (sent) => resolve({ record, sent }),
              fail: reject,
            });
          }),
      ),
    );
  }

  sent(records: OutboundRecord[]): void {
    for (const out of records) {
      const origin = out.origin;
      if (!origin) continue; // nothing else is sent here (no shadow results, no events)
      const key = partitionKey(origin);
      let byOffset = this.acknowledged.get(key);
      if (!byOffset) this.acknowledged.set(key, (byOffset = new Map()));
      byOffset.set(BigInt(origin.offset), out);
    }
  }

  committed(offsets: TopicPartitionOffset[]): void {
    for (const tp of offsets) {
      const key = partitionKey(tp);
      const list = this.waiting.get(key);
      if (!list) continue;
      const next = BigInt(tp.offset);
      const byOffset = this.acknowledged.get(key);
      let done = 0;
      while (done < list.length && list[done]!.offset < next) {
        const waiter = list[done++]!;
        waiter.settle(byOffset?.get(waiter.offset) ?? null);
        byOffset?.delete(waiter.offset);
      }
      list.splice(0, done);
    }
  }

  /** These records will not be answered (never handed to the worker). */
  fail(records: InboundRecord[], err: Error): void {
    const failing = new Set(records);
    for (const [key, list] of this.waiting) {
      const kept = list.filter((w) => {
        if (!failing.has(w.record)) return true;
        w.fail(err);
        return false;
      });
      this.waiting.set(key, kept);
    }
  }

  /** The worker stopped: whatever is still waiting was read but left unanswered. */
  closed(): void {
    for (const list of this.waiting.values()) {
      for (const waiter of list) waiter.fail(new PipelineClosed());
    }
    this.waiting.clear();
    this.acknowledged.clear();
  }
}

interface MemorySourceOptions {
  /** The worker commits: every record below these offsets is answered. */
  onCommit(offsets: TopicPartitionOffset[]): void;
  /** The worker threw on these records (it should not: it dead-letters what it cannot score). */
  onError(records: InboundRecord[], err: Error): void;
}

/**
 * A RecordSource fed by push(): records are handed to the worker in the order pushed, in chunks,
 * and only while it has not paused fetching (backpressure), as a consumer would fetch them.
 */
class MemorySource implements RecordSource {
  private handlers: SourceHandlers | null = null;
  private readonly queue: InboundRecord[][] = [];
  private paused = false;
  private stopped = false;
  private pumping: Promise<void> | null = null;
  private readonly control: BatchControl = {
    heartbeat: async () => undefined,
    isStale: () => this.stopped,
  };

  constructor(private readonly options: MemorySourceOptions) {}

  async run(handlers: SourceHandlers): Promise<void> {
    this.handlers = handlers;
    this.pump();
  }

  push(records: InboundRecord[]): void {
    for (let i = 0; i < records.length; i += CHUNK) this.queue.push(records.slice(i, i + CHUNK));
    this.pump();
  }

  /** Records pushed that the worker never got (it stopped first). */
  takeUndelivered(): InboundRecord[] {
    return this.queue.splice(0).flat();
  }

  pause(): void {
    this.paused = true;
  }

  resume(): void {
    this.paused = false;
    this.pump();
  }

  // exactly-once only (per-partition transactions); the pipeline delivers at least once.
  hold(): void {}
  release(): void {}

  async commit(offsets: TopicPartitionOffset[]): Promise<void> {
    this.options.onCommit(offsets);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.pumping;
  }

  private pump(): void {
    if (this.pumping || !this.handlers) return;
    const handlers = this.handlers;
    this.pumping = (async () => {
      while (!this.paused && !this.stopped && this.queue.length > 0) {
        const records = this.queue.shift()!;
        try {
          await handlers.onRecords(records, this.control);
        } catch (err) {
          this.options.onError(records, err as Error);
        }
      }
    })().finally(() => {
      this.pumping = null;
      if (!this.paused && !this.stopped && this.queue.length > 0) this.pump();
    });
  }
}

/** No broker: every record is acknowledged at once. */
class AcknowledgingSink implements RecordSink {
  async send(): Promise<void> {}
  async close(): Promise<void> {}
}

/** Passes sends through to `inner` and reports what it acknowledged. */
class ObservedSink implements RecordSink {
  readonly reset?: () => Promise<void>;

  constructor(
    private readonly inner: RecordSink,
    private readonly onAcknowledged: (records: OutboundRecord[]) => void,
  ) {
    if (inner.reset) this.reset = () => inner.reset!();
  }

  async send(records: OutboundRecord[]): Promise<void> {
    await this.inner.send(records);
    this.onAcknowledged(records);
  }

  close(): Promise<void> {
    return this.inner.close();
  }
}
