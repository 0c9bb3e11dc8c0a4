import { BatchDriver, BatchPolicy, systemClock, type Clock } from '../batching/index.js';
import { toExample } from '../codec/examples.js';
import type { InferenceCodec, InferenceRequest, InferenceResult } from '../codec/types.js';
import { asStreamscoreError, categoryOf, StreamscoreError } from '../errors.js';
import type {
  BatchControl,
  InboundRecord,
  OutboundRecord,
  RecordSink,
  RecordSource,
  TopicPartition,
} from '../kafka/types.js';
import type { ModelRunner, PackedBatch } from '../model/types.js';
import { silentLogger, type Logger } from '../telemetry/logger.js';
import { WorkerMetrics } from '../telemetry/metrics.js';
import { deadLetterFor, HEADER } from './headers.js';
import { OffsetTracker } from './offsets.js';
import { packBatch, resultFor } from './tensors.js';

export interface WorkerOptions {
  resultTopic: string;
  deadLetterTopic: string;
  maxBatchSize: number;
  maxDelayMs: number;
  /** Records read but not yet answered; fetching waits at this many. */
  maxQueued: number;
  maxPayloadBytes: number;
  commitIntervalMs: number;
  drainTimeoutMs: number;
}

export interface WorkerDeps {
  source: RecordSource;
  sink: RecordSink;
  codec: InferenceCodec;
  model: ModelRunner;
  options: WorkerOptions;
  clock?: Clock;
  log?: Logger;
  metrics?: WorkerMetrics;
  /** The source gave up for good (non-retriable Kafka error). */
  onFatal?: ((error: Error) => void) | undefined;
}

/** A request that decoded and fits the model, waiting for its batch. */
export interface PendingRequest {
  record: InboundRecord;
  request: InferenceRequest;
  example: Record<string, Float32Array>;
  receivedAt: number;
}

export interface StopReport {
  /** Records read but left unanswered (they were not committed and will be read again). */
  unanswered: number;
  drained: boolean;
}

const MAX_SEND_BACKOFF_MS = 5000;

/**
 * consume → decode → batch → infer → encode → produce → commit.
 *
 * At-least-once: an offset is committed only once the result or dead letter of that record and
 * of every earlier record of its partition was acknowledged by the broker.
 */
export class InferenceWorker {
  readonly metrics: WorkerMetrics;
  private readonly source: RecordSource;
  private readonly sink: RecordSink;
  private readonly codec: InferenceCodec;
  private readonly model: ModelRunner;
  private readonly options: WorkerOptions;
  private readonly clock: Clock;
  private readonly log: Logger;
  private readonly tracker = new OffsetTracker();
  private readonly driver: BatchDriver<PendingRequest>;
  private readonly sends = new Set<Promise<void>>();
  private roomWaiters: (() => void)[] = [];
  private commitChain: Promise<void> = Promise.resolve();
  private cancelCommitTimer: (() => void) | null = null;
  private stopping = false;
  /** Once set, failed sends are no longer retried: their records stay uncommitted. */
  private abandonSends = false;
  private committingClosed = false;
  private stopPromise: Promise<StopReport> | null = null;
  private readonly onFatal: ((error: Error) => void) | undefined;

  constructor(deps: WorkerDeps) {
    this.source = deps.source;
    this.sink = deps.sink;
    this.codec = deps.codec;
    this.model = deps.model;
    this.options = deps.options;
    this.clock = deps.clock ?? systemClock;
    this.log = (deps.log ?? silentLogger).child({ component: 'worker' });
    this.metrics = deps.metrics ?? new WorkerMetrics();
    this.onFatal = deps.onFatal;
    this.driver = new BatchDriver<PendingRequest>({
      policy: new BatchPolicy({
        maxBatchSize: this.options.maxBatchSize,
        maxDelayMs: this.options.maxDelayMs,
      }),
      clock: this.clock,
      run: (batch) => this.processBatch(batch),
      onError: (err) => this.log.error({ err }, 'batch processing failed unexpectedly'),
    });
  }

  /** Records read and not yet answered. */
  get inFlight(): number {
    return this.tracker.pending;
  }

  async start(): Promise<void> {
    await this.source.run({
      onRecords: (records, control) => this.onRecords(records, control),
      onAssignment: (partitions) => this.onAssignment(partitions),
      onFatal: (error) => {
        this.log.fatal({ err: error }, 'Kafka consumer stopped for good');
        this.onFatal?.(error);
      },
    });
    this.log.info(
      {
        model: this.model.info.name,
        version: this.model.info.version,
        backend: this.model.info.backend,
      },
      'worker started',
    );
  }

  /** Stops fetching, answers what is in flight (within drainTimeoutMs), commits, leaves the group. */
  stop(): Promise<StopReport> {
    this.stopPromise ??= this.drainAndStop();
    return this.stopPromise;
  }

  private async drainAndStop(): Promise<StopReport> {
    this.stopping = true;
    this.releaseRoomWaiters();
    this.source.pause();
    const drained = await this.withDeadline(this.options.drainTimeoutMs, async () => {
      await this.driver.close();
      while (this.sends.size > 0) await Promise.allSettled([...this.sends]);
    });
    this.abandonSends = true;
    this.cancelCommitTimer?.();
    await this.commitNow();
    // The group is left next: a send acknowledged after this point must not try to commit.
    this.committingClosed = true;
    const unanswered = this.tracker.pending;
    await this.source.stop();
    await this.sink.close();
    const report = { unanswered, drained };
    if (drained)
      this.log.info(
        { ...report, ...this.metrics.snapshot },
        'worker stopped, all in-flight requests answered',
      );
    else
      this.log.warn(
        { ...report, drainTimeoutMs: this.options.drainTimeoutMs },
        'worker stopped at the drain deadline; unanswered requests were not committed and will be read again',
      );
    return report;
  }

  private async withDeadline(ms: number, work: () => Promise<void>): Promise<boolean> {
    let cancel: () => void = () => undefined;
    const timeout = new Promise<boolean>((resolve) => {
      cancel = this.clock.setTimer(ms, () => resolve(false));
    });
    try {
      return await Promise.race([work().then(() => true), timeout]);
    } finally {
      cancel();
    }
  }

  private onAssignment(partitions: TopicPartition[]): void {
    this.tracker.retain(partitions);
    this.log.info({ partitions }, 'partitions assigned');
  }

  private async onRecords(records: InboundRecord[], control: BatchControl): Promise<void> {
    await this.waitForRoom(control);
    this.metrics.received(records.length);
    const deadLetters: { record: InboundRecord; out: OutboundRecord }[] = [];
    for (const record of records) {
      this.tracker.track(record, record.offset);
      const receivedAt = this.clock.now();
      try {
        this.driver.add(this.accept(record, receivedAt), record.value?.length ?? 0);
      } catch (err) {
        deadLetters.push({
          record,
          out: this.deadLetter(record, asStreamscoreError(err, 'DECODE_FAILED')),
        });
      }
    }
    if (deadLetters.length > 0) {
      this.track(
        this.deliver(
          deadLetters.map((d) => d.out),
          deadLetters.map((d) => d.record),
        ),
      );
    }
  }

  /** Backpressure: wait while too many records are unanswered, heartbeating meanwhile. */
  private async waitForRoom(control: BatchControl): Promise<void> {
    while (!this.stopping && this.tracker.pending >= this.options.maxQueued && !control.isStale()) {
      await new Promise<void>((resolve) => {
        const cancel = this.clock.setTimer(1000, resolve);
        this.roomWaiters.push(() => {
          cancel();
          resolve();
        });
      });
      await control.heartbeat();
    }
  }

  private releaseRoomWaiters(): void {
    const waiters = this.roomWaiters;
    this.roomWaiters = [];
    for (const wake of waiters) wake();
  }

  /** Decodes and validates one record; throws a typed error for anything that cannot be scored. */
  private accept(record: InboundRecord, receivedAt: number): PendingRequest {
    const { value } = record;
    if (!value || value.length === 0) {
      throw new StreamscoreError('EMPTY_PAYLOAD', 'record has no value');
    }
    if (value.length > this.options.maxPayloadBytes) {
      throw new StreamscoreError(
        'PAYLOAD_TOO_LARGE',
        `record value is ${value.length} bytes, over limits.maxPayloadBytes=${this.options.maxPayloadBytes}`,
      );
    }
    const request = this.codec.decodeRequest(value);
    const { info } = this.model;
    if (
      (request.model !== null && request.model !== info.name) ||
      (request.modelVersion !== null && request.modelVersion !== info.version)
    ) {
      throw new StreamscoreError(
        'UNKNOWN_MODEL',
        `request asks for model ${request.model ?? info.name} version ${request.modelVersion ?? 'any'}; this worker serves ${info.name} version ${info.version}`,
        { details: { requestId: request.id } },
      );
    }
    try {
      return { record, request, example: toExample(request, info.inputs), receivedAt };
    } catch (err) {
      // Keep the request id so the dead letter can be correlated by the caller.
      if (err instanceof StreamscoreError) err.details.requestId = request.id;
      throw err;
    }
  }

  private deadLetter(record: InboundRecord, error: StreamscoreError): OutboundRecord {
    const requestId =
      typeof error.details.requestId === 'string' ? error.details.requestId : undefined;
    this.metrics.deadLetter(error.code, categoryOf(error.code));
    this.log.warn(
      {
        topic: record.topic,
        partition: record.partition,
        offset: record.offset,
        code: error.code,
        requestId,
      },
      `dead-lettering record: ${error.message}`,
    );
    return deadLetterFor(record, error, {
      topic: this.options.deadLetterTopic,
      now: this.clock.now(),
      requestId,
      model: { name: this.model.info.name, version: this.model.info.version },
    });
  }

  private async processBatch(batch: PendingRequest[]): Promise<void> {
    const { info } = this.model;
    const startedAt = this.clock.now();
    let outputs;
    try {
      const packed: PackedBatch = packBatch(batch, info.inputs);
      outputs = await this.model.predict(packed);
    } catch (err) {
      const error = asStreamscoreError(err, 'MODEL_FAILED');
      const letters = batch.map((p) => {
        error.details.requestId = p.request.id;
        return this.deadLetter(p.record, error);
      });
      await this.deliver(
        letters,
        batch.map((p) => p.record),
      );
      return;
    }
    const inferredAt = this.clock.now();
    this.metrics.batch(batch.length, inferredAt - startedAt);

    const out: OutboundRecord[] = [];
    const records: InboundRecord[] = [];
    for (let i = 0; i < batch.length; i++) {
      const pending = batch[i]!;
      records.push(pending.record);
      try {
        out.push(this.resultRecord(pending, resultFor(outputs, i, batch.length, info), inferredAt));
      } catch (err) {
        const error = asStreamscoreError(err, 'ENCODE_FAILED');
        error.details.requestId = pending.request.id;
        out.push(this.deadLetter(pending.record, error));
      }
    }
    await this.deliver(out, records, batch);
  }

  private resultRecord(
    pending: PendingRequest,
    scored: Pick<InferenceResult, 'outputs' | 'label' | 'labelIndex' | 'score'>,
    inferredAt: number,
  ): OutboundRecord {
    const { info } = this.model;
    const result: InferenceResult = {
      id: pending.request.id,
      model: info.name,
      modelVersion: info.version,
      ...scored,
      requestedAt: pending.request.requestedAt ?? pending.record.timestamp,
      receivedAt: Math.round(pending.receivedAt),
      inferredAt: Math.round(inferredAt),
      sentAt: Math.round(this.clock.now()),
    };
    return {
      topic: this.options.resultTopic,
      key: pending.record.key,
      value: this.codec.encodeResult(result),
      headers: {
        [HEADER.correlationId]: pending.request.id,
        [HEADER.model]: info.name,
        [HEADER.modelVersion]: info.version,
      },
    };
  }

  private track(promise: Promise<void>): void {
    this.sends.add(promise);
    void promise.finally(() => this.sends.delete(promise));
  }

  /**
   * Sends until the broker acknowledges, retrying with jittered backoff: skipping would lose the
   * records. Acks the source records afterwards so their offsets become committable.
   */
  private async deliver(
    out: OutboundRecord[],
    records: InboundRecord[],
    answered?: PendingRequest[],
  ): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      try {
        await this.sink.send(out);
        break;
      } catch (err) {
        if (this.abandonSends) {
          this.log.warn(
            { err, records: out.length },
            'send abandoned at shutdown; records stay uncommitted',
          );
          return;
        }
        this.metrics.sendRetry();
        const backoff = Math.min(MAX_SEND_BACKOFF_MS, 100 * 2 ** Math.min(attempt, 6));
        const wait = backoff / 2 + Math.random() * (backoff / 2);
        this.log.warn({ err, attempt, retryInMs: Math.round(wait) }, 'send failed, retrying');
        await new Promise<void>((resolve) => this.clock.setTimer(wait, resolve));
      }
    }
    const ackedAt = this.clock.now();
    for (const record of records) this.tracker.ack(record, record.offset);
    if (answered) {
      this.metrics.produced(answered.length);
      for (const p of answered) {
        this.metrics.endToEnd(ackedAt - (p.request.requestedAt ?? p.record.timestamp));
      }
    }
    this.releaseRoomWaiters();
    this.scheduleCommit();
  }

  private scheduleCommit(): void {
    if (this.committingClosed) return;
    if (this.options.commitIntervalMs === 0) {
      void this.commitNow();
      return;
    }
    if (this.cancelCommitTimer) return;
    this.cancelCommitTimer = this.clock.setTimer(this.options.commitIntervalMs, () => {
      this.cancelCommitTimer = null;
      void this.commitNow();
    });
  }

  /** Commits are serialised so an older commit never lands after a newer one. */
  private commitNow(): Promise<void> {
    this.commitChain = this.commitChain.then(async () => {
      const offsets = this.tracker.committable();
      if (offsets.length === 0) return;
      try {
        await this.source.commit(offsets);
        this.tracker.markCommitted(offsets);
        this.log.debug({ offsets }, 'offsets committed');
      } catch (err) {
        // Not fatal: the next commit carries the same or later offsets.
        this.log.warn({ err, offsets }, 'offset commit failed; will retry');
      }
    });
    return this.commitChain;
  }
}
