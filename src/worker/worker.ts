import { BatchDriver, BatchPolicy, systemClock, type Clock } from '../batching/index.js';
import { toExample, type ExampleValues } from '../codec/examples.js';
import type {
  InferenceCodec,
  InferenceRequest,
  InferenceResult,
  RequestCodecs,
  TopicCodec,
} from '../codec/types.js';
import { asStreamscoreError, categoryOf, StreamscoreError } from '../errors.js';
import type {
  BatchControl,
  InboundRecord,
  OutboundRecord,
  RecordSink,
  RecordSource,
  TopicPartition,
  TransactionalSink,
} from '../kafka/types.js';
import { ModelCatalog } from '../model/catalog.js';
import type { Rollout, RolloutEvent, Route } from '../model/rollout.js';
import type { ModelInfo, ModelRunner } from '../model/types.js';
import { silentLogger, type Logger } from '../telemetry/logger.js';
import { WorkerMetrics } from '../telemetry/metrics.js';
import type { RequestTracing } from '../telemetry/tracing.js';
import { deadLetterFor, HEADER, isValueDropped, withoutValue } from './headers.js';
import { predictNarrowing } from './narrow.js';
import { OffsetTracker } from './offsets.js';
import { OrderedSender, SendAbandoned, sizeOf } from './sender.js';
import { packBatch, resultFor } from './tensors.js';
import { TransactionalDelivery, type Delivered } from './transactions.js';

/** How soon a failed offset commit is tried again (or commit.intervalMs, if longer). */
const COMMIT_RETRY_MS = 1000;

export interface WorkerOptions {
  resultTopic: string;
  deadLetterTopic: string;
  /** Topic for the "failed" dead-letter category; default: deadLetterTopic. */
  failedTopic?: string | undefined;
  /** A record whose model step fails retriably this many times is dead-lettered. Default 5. */
  maxAttempts?: number;
  maxBatchSize: number;
  /** Cut a batch once its record values add up to this many bytes. */
  maxBatchBytes?: number;
  maxDelayMs: number;
  /** Records read but not yet answered at which fetching pauses; it resumes at half. */
  maxQueued: number;
  /** Largest produce request the sender coalesces results into. */
  maxSendBytes?: number;
  /** Records larger than this are refused before sending, as the broker would refuse them. */
  maxRecordBytes?: number;
  maxPayloadBytes: number;
  commitIntervalMs: number;
  drainTimeoutMs: number;
  /** Candidate results of shadowed requests go here (best effort); null: shadow results are dropped. */
  shadowTopic?: string | null;
  /** Rollbacks and promotions are written here as JSON events; null: only logged and counted. */
  eventsTopic?: string | null;
}

export interface WorkerDeps {
  source: RecordSource;
  sink: RecordSink;
  /** One codec for every topic, results to options.resultTopic. Ignored when `codecs` is given. */
  codec?: InferenceCodec;
  /** A codec per request topic (framing, field mappings) and where its results go. */
  codecs?: RequestCodecs;
  model: ModelRunner;
  options: WorkerOptions;
  clock?: Clock;
  log?: Logger;
  metrics?: WorkerMetrics;
  /** The source gave up for good (non-retriable Kafka error). */
  onFatal?: ((error: Error) => void) | undefined;
  /**
   * exactly-once mode: answers and offsets are committed through per-partition transactions;
   * `sink` and `source.commit` are then not used.
   */
  transactions?: TransactionalSink | undefined;
  /** Spans per request (telemetry.otlpEndpoint set); none are made without it. */
  tracing?: RequestTracing | undefined;
  /**
   * model.canary: a candidate on trial. Keys routed to 'canary' are answered by it; keys routed to
   * 'shadow' are answered by `model` and also scored by it for comparison.
   */
  rollout?: Rollout | undefined;
  /**
   * Every model and version served, and which a request gets (model.additional, model.versions,
   * model.byTopic). Default: `model` alone, plus the rollout's candidate for requests naming it.
   */
  catalog?: ModelCatalog | undefined;
}

/** A request that decoded and fits the model, waiting for its batch. */
export interface PendingRequest {
  record: InboundRecord;
  request: InferenceRequest;
  /** Its topic's codec: encodes the result and says where it goes. */
  codec: TopicCodec;
  /** The model (version) that scores it. */
  runner: ModelRunner;
  /** Reached by policy (no version named) on the default model: canary routing applies. */
  byPolicy: boolean;
  example: Record<string, ExampleValues>;
  receivedAt: number;
}

export interface StopReport {
  /** Records read but left unanswered (they were not committed and will be read again). */
  unanswered: number;
  drained: boolean;
}

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
  private readonly codecs: RequestCodecs;
  /** Topics results are written to (every topic's resultTopic), told apart from dead letters. */
  private readonly resultTopics: Set<string>;
  private readonly model: ModelRunner;
  private readonly options: WorkerOptions;
  private readonly clock: Clock;
  private readonly log: Logger;
  private readonly tracker = new OffsetTracker();
  private readonly driver: BatchDriver<PendingRequest>;
  private readonly sender: OrderedSender;
  private readonly sends = new Set<Promise<void>>();
  /** Resolves when the previous batch handed its results to the sender (keeps batch order). */
  private previousBatchQueued: Promise<void> = Promise.resolve();
  private paused = false;
  private backpressured = false;
  private brokerAway = false;
  private commitChain: Promise<void> = Promise.resolve();
  private cancelCommitTimer: (() => void) | null = null;
  private stopping = false;
  private committingClosed = false;
  private stopPromise: Promise<StopReport> | null = null;
  private readonly onFatal: ((error: Error) => void) | undefined;
  private readonly transactions: TransactionalDelivery<PendingRequest> | null;
  private readonly tracing: RequestTracing | undefined;
  private readonly rollout: Rollout | undefined;
  private readonly catalog: ModelCatalog;

  constructor(deps: WorkerDeps) {
    this.source = deps.source;
    this.sink = deps.sink;
    this.codecs = deps.codecs ?? singleCodec(deps.codec, deps.options.resultTopic);
    this.resultTopics = new Set([deps.options.resultTopic, ...(deps.codecs?.resultTopics ?? [])]);
    this.model = deps.model;
    this.options = deps.options;
    this.clock = deps.clock ?? systemClock;
    this.log = (deps.log ?? silentLogger).child({ component: 'worker' });
    this.metrics = deps.metrics ?? new WorkerMetrics();
    this.onFatal = deps.onFatal;
    this.tracing = deps.tracing;
    this.rollout = deps.rollout;
    this.catalog =
      deps.catalog ??
      new ModelCatalog(deps.model.info.name).add(deps.model.info.name, {
        main: deps.model,
        pinned: deps.rollout ? [deps.rollout.candidate] : [],
      });
    this.rollout?.listen({
      rolledBack: (event) => this.rolloutEnded(event),
      promoted: (event) => this.rolloutEnded(event),
    });
    this.transactions = deps.transactions
      ? new TransactionalDelivery<PendingRequest>({
          source: this.source,
          sink: deps.transactions,
          clock: this.clock,
          commitIntervalMs: this.options.commitIntervalMs,
          // Answers count against maxQueued until committed: commit before they fill it.
          commitEarlyAt: Math.max(1, Math.floor(this.options.maxQueued / 8)),
          log: this.log,
          onCommitted: (items) => this.committed(items),
          onDropped: (partition, records, reason) => {
            this.log.info(
              { ...partition, records: records.length, reason },
              'uncommitted answers dropped',
            );
            if (this.tracing) for (const record of records) this.tracing.abandoned(record, reason);
          },
        })
      : null;
    this.driver = new BatchDriver<PendingRequest>({
      policy: new BatchPolicy({
        maxBatchSize: this.options.maxBatchSize,
        maxDelayMs: this.options.maxDelayMs,
        ...(this.options.maxBatchBytes ? { maxBatchBytes: this.options.maxBatchBytes } : {}),
      }),
      clock: this.clock,
      run: (batch) => this.processBatch(batch),
      // Pipelining: while one batch infers, the next forms, and finished ones are being sent.
      concurrency: this.model.concurrency ?? 1,
      onError: (err) => this.log.error({ err }, 'batch processing failed unexpectedly'),
    });
    this.sender = new OrderedSender({
      sink: this.sink,
      clock: this.clock,
      maxSendBytes: this.options.maxSendBytes ?? 512 * 1024,
      maxSendRecords: 10_000,
      ...(this.options.maxRecordBytes ? { maxRecordBytes: this.options.maxRecordBytes } : {}),
      onRetry: (err, attempt, retryInMs, error) => {
        this.metrics.sendRetry();
        this.log.warn(
          { err, code: error.code, attempt, retryInMs: Math.round(retryInMs) },
          'send failed, retrying',
        );
        // Nothing is skipped while sends fail: stop reading more until one succeeds again.
        if (!this.brokerAway) {
          this.brokerAway = true;
          this.updateFetching();
        }
      },
      onRecovered: (failedAttempts) => {
        this.log.info({ failedAttempts }, 'send succeeded again');
        if (this.brokerAway) {
          this.brokerAway = false;
          this.updateFetching();
        }
      },
      onRejected: (records, error) => this.onSendRejected(records, error),
      onDropped: (records, error) => this.onSendDropped(records, error),
      // kafkajs rolls back the sequence numbers of a refused request's partitions, appended or
      // not; only a new producer id can send to them again.
      ...(this.sink.reset ? { beforeIsolating: () => this.sink.reset!() } : {}),
    });
  }

  /** Records read and not yet answered. */
  get inFlight(): number {
    return this.transactions?.pending ?? this.tracker.pending;
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
        delivery: this.transactions ? 'exactly-once' : 'at-least-once',
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
    this.source.pause();
    const drained = await this.withDeadline(this.options.drainTimeoutMs, async () => {
      await this.driver.close();
      while (this.sends.size > 0) await Promise.allSettled([...this.sends]);
      await this.transactions?.flush();
    });
    this.sender.abandon();
    this.cancelCommitTimer?.();
    await this.commitNow();
    // The group is left next: a send acknowledged after this point must not try to commit.
    this.committingClosed = true;
    const unanswered = this.inFlight;
    const left = this.transactions?.uncommitted() ?? this.tracker.unanswered();
    await this.transactions?.close();
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
        { ...report, left, drainTimeoutMs: this.options.drainTimeoutMs },
        `worker stopped at the drain deadline with ${unanswered} request(s) unanswered in ${left.length} partition(s) (${left.map((l) => `${l.topic}[${l.partition}] from offset ${l.from}: ${l.count}`).join('; ')}); they were not committed and will be read again`,
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
    if (this.transactions) this.transactions.assign(partitions);
    else {
      this.tracker.retain(partitions);
      // After a rejoin (e.g. the consumer restarted itself) answered offsets may be uncommitted.
      this.scheduleCommit();
    }
    this.log.info({ partitions }, 'partitions assigned');
  }

  private async onRecords(records: InboundRecord[], control: BatchControl): Promise<void> {
    if (this.codecs.prepare) {
      try {
        // Writer schemas of framed records; waits while the registry is away. Asked once per
        // retry, the callback also heartbeats, so a long registry outage does not cost the group.
        await this.codecs.prepare(records, () => {
          control.heartbeat().catch(() => undefined);
          return this.stopping || control.isStale();
        });
      } catch (err) {
        if (this.stopping || control.isStale()) return; // not tracked: read again by the owner
        throw err;
      }
    }
    this.metrics.received(records.length);
    const deadLetters: { record: InboundRecord; out: OutboundRecord }[] = [];
    const readAt = this.tracing?.readAt();
    for (const record of records) {
      const fresh = this.transactions
        ? this.transactions.track(record)
        : this.tracker.track(record, record.offset);
      if (!fresh) {
        this.metrics.skipped(1);
        continue;
      }
      this.tracing?.received(record, readAt);
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
    this.applyBackpressure();
  }

  /**
   * Memory stays bounded under overload: fetching pauses while maxQueued records are unanswered
   * and resumes at half, so the consumer keeps heartbeating from its own loop meanwhile.
   */
  private applyBackpressure(): void {
    const pending = this.inFlight;
    if (!this.backpressured && pending >= this.options.maxQueued) {
      this.backpressured = true;
      this.log.debug({ pending }, 'too many unanswered requests');
    } else if (this.backpressured && pending <= this.options.maxQueued / 2) {
      this.backpressured = false;
    }
    this.updateFetching();
  }

  /** Fetching pauses while too much is unanswered or while sends fail retriably. */
  private updateFetching(): void {
    const pause = this.backpressured || this.brokerAway;
    if (pause && !this.paused) {
      this.paused = true;
      this.source.pause();
      this.log.debug(
        { backpressured: this.backpressured, brokerAway: this.brokerAway },
        'fetching paused',
      );
    } else if (!pause && this.paused && !this.stopping) {
      this.paused = false;
      this.source.resume();
      this.log.debug('fetching resumed');
    }
  }

  /** True while fetching is paused (backpressure, or the broker refusing sends for now). */
  get isPaused(): boolean {
    return this.paused;
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
    const codec = this.codecs.forTopic(record.topic);
    const request = codec.decodeRequest(value);
    this.tracing?.identified(record, request.id);
    try {
      const { runner, byPolicy } = this.catalog.resolve(
        record.topic,
        request.model,
        request.modelVersion,
      );
      if (request.mapping) request.inputs = request.mapping.inputsFor(request, runner.info);
      return {
        codec,
        record,
        request,
        runner,
        byPolicy: byPolicy && runner === this.model,
        example: toExample(request, runner.info.inputs),
        receivedAt,
      };
    } catch (err) {
      // Keep the request id so the dead letter can be correlated by the caller.
      if (err instanceof StreamscoreError) err.details.requestId = request.id;
      throw err;
    }
  }

  private deadLetter(
    record: InboundRecord,
    error: StreamscoreError,
    extra: { requestId?: string; history?: readonly StreamscoreError[] } = {},
  ): OutboundRecord {
    const requestId =
      extra.requestId ??
      (typeof error.details.requestId === 'string' ? error.details.requestId : undefined);
    const category = categoryOf(error.code);
    this.metrics.deadLetter(error.code, category);
    this.log.warn(
      {
        topic: record.topic,
        partition: record.partition,
        offset: record.offset,
        code: error.code,
        requestId,
        ...(extra.history && extra.history.length > 1 ? { attempts: extra.history.length } : {}),
        ...this.tracing?.logFields(record),
      },
      `dead-lettering record: ${error.message}`,
    );
    return deadLetterFor(record, error, {
      topic:
        category === 'failed'
          ? (this.options.failedTopic ?? this.options.deadLetterTopic)
          : this.options.deadLetterTopic,
      now: this.clock.now(),
      requestId,
      model: { name: this.model.info.name, version: this.model.info.version },
      history: extra.history,
    });
  }

  /**
   * The broker refused these records for good (OrderedSender's onRejected): a refused result
   * becomes a dead letter (KAFKA_RECORD_REJECTED, category failed); a refused dead letter is sent
   * again without the original value and headers; a refused one of those is logged, counted
   * (KAFKA_RECORD_REJECTED dropped) and left out, so the partition moves on.
   */
  private onSendRejected(records: OutboundRecord[], error: StreamscoreError): OutboundRecord[] {
    const replacements: OutboundRecord[] = [];
    for (const refused of records) {
      const origin = refused.origin;
      if (origin && this.resultTopics.has(refused.topic)) {
        const requestId = refused.headers[HEADER.correlationId];
        replacements.push(
          this.deadLetter(
            origin,
            new StreamscoreError(
              'KAFKA_RECORD_REJECTED',
              `the broker refused the result: ${error.message}`,
              { cause: error },
            ),
            { ...(requestId !== undefined ? { requestId: String(requestId) } : {}) },
          ),
        );
      } else if (origin && !isValueDropped(refused)) {
        this.log.error(
          { topic: origin.topic, partition: origin.partition, offset: origin.offset, err: error },
          'the broker refused a dead letter; sending it without the original value',
        );
        replacements.push(withoutValue(refused, error));
      } else {
        this.onSendDropped([refused], error);
      }
    }
    return replacements;
  }

  /**
   * exactly-once: a record over maxRecordBytes would fail its whole transaction again and again,
   * so it is replaced before it joins one, the way the sender does it (a result becomes a dead
   * letter, a dead letter loses its value; null when even that is too large).
   */
  private withinRecordLimit(out: OutboundRecord): OutboundRecord | null {
    const limit = this.options.maxRecordBytes;
    let record: OutboundRecord | undefined = out;
    for (let depth = 0; record && limit !== undefined && sizeOf(record) > limit; depth++) {
      const error: StreamscoreError = new StreamscoreError(
        'KAFKA_RECORD_REJECTED',
        `record of ${sizeOf(record)} bytes is over kafka.maxRecordBytes=${limit}`,
      );
      if (depth >= 2) {
        this.onSendDropped([record], error);
        return null;
      }
      record = this.onSendRejected([record], error)[0];
    }
    return record ?? null;
  }

  /** Nothing of these records could be sent: logged and counted, then left out. */
  private onSendDropped(records: OutboundRecord[], error: StreamscoreError): void {
    for (const dropped of records) {
      this.metrics.deadLetter('KAFKA_RECORD_REJECTED', 'dropped');
      this.log.error(
        {
          err: error,
          topic: dropped.topic,
          source: dropped.origin
            ? `${dropped.origin.topic}/${dropped.origin.partition}/${dropped.origin.offset}`
            : undefined,
        },
        'the broker refused a record even without its value; it is dropped',
      );
    }
  }

  /**
   * Infers one batch and hands its results to the sender in batch order (batches may finish out
   * of order when several replicas run). Returns once the results are queued, not acknowledged,
   * so the next batch can start while this one is sent.
   */
  private async processBatch(batch: PendingRequest[]): Promise<void> {
    const previous = this.previousBatchQueued;
    let queued: () => void = () => undefined;
    this.previousBatchQueued = new Promise((resolve) => (queued = resolve));
    try {
      const out = await this.score(batch);
      await previous;
      this.track(
        this.deliver(
          out,
          batch.map((p) => p.record),
          out.answered,
        ),
      );
    } finally {
      queued();
    }
  }

  /**
   * Results (or dead letters) for a batch, in the batch's order. A batch may mix models and
   * versions: each group is scored on its own runner, at once, and the answers merged back in
   * batch order; the default model's requests by policy may meet a canary. A batch the model
   * fails on is narrowed to the records it fails for (narrow.ts); only those are dead-lettered.
   */
  private async score(batch: PendingRequest[]): Promise<Scored> {
    const groups = new Map<ModelRunner | 'policy', PendingRequest[]>();
    for (const p of batch) {
      const key = p.byPolicy ? 'policy' : p.runner;
      const group = groups.get(key);
      if (group) group.push(p);
      else groups.set(key, [p]);
    }
    if (groups.size === 1 && groups.has('policy')) return this.scoreByPolicy(batch);
    const entries = [...groups];
    const scored = await Promise.all(
      entries.map(([key, items]) =>
        key === 'policy'
          ? this.scoreByPolicy(items)
          : this.scoreLeased(key, items, { stable: items.length }),
      ),
    );
    const position = new Map<PendingRequest, [number, number]>();
    entries.forEach(([, items], g) => items.forEach((p, i) => position.set(p, [g, i])));
    const out = batch.map((p) => {
      const [g, i] = position.get(p)!;
      return scored[g]![i]!;
    });
    const answered = new Set(scored.flatMap((s) => s.answered));
    return Object.assign(out, {
      answered: batch.filter((p) => answered.has(p)),
      scored: [],
      shadow: [],
      msPerRequest: 0,
    });
  }

  private async scoreByPolicy(batch: PendingRequest[]): Promise<Scored> {
    const { rollout } = this;
    if (!rollout || rollout.state !== 'trial') {
      return this.scoreLeased(this.model, batch, { stable: batch.length });
    }
    // On trial: the stable version scores 'stable' and 'shadow' keys, the candidate 'canary' and
    // 'shadow' keys; each key is answered by one version, a shadowed key by the stable one.
    const routes = batch.map((p) => rollout.route(p.record.key, p.request.id));
    const stable = batch.filter((_, i) => routes[i] !== 'canary');
    const candidate = batch.filter((_, i) => routes[i] !== 'stable');
    const shadowed = new Set(batch.filter((_, i) => routes[i] === 'shadow'));
    const [outStable, outCandidate] = await Promise.all([
      stable.length > 0
        ? this.scoreLeased(this.model, stable, { stable: stable.length })
        : noScores(),
      candidate.length > 0
        ? this.scoreLeased(
            rollout.candidate,
            candidate,
            { canary: candidate.length - shadowed.size, shadow: shadowed.size },
            shadowed,
          )
        : noScores(),
    ]);
    this.judgeTrial(rollout, { stable, outStable }, { candidate, outCandidate, shadowed });
    // Answers in batch order: canary keys from the candidate, all others from the stable version.
    let s = 0;
    let c = 0;
    const out = routes.map((route) => (route === 'canary' ? outCandidate[c++]! : outStable[s++]!));
    const answered = new Set([...outStable.answered, ...outCandidate.answered]);
    return Object.assign(out, {
      answered: batch.filter((p) => answered.has(p)),
      scored: [],
      shadow: [],
      msPerRequest: 0,
    });
  }

  /** Feeds a trial batch to the judge and the agreement metrics, and sends the shadow results. */
  private judgeTrial(
    rollout: Rollout,
    { stable, outStable }: { stable: PendingRequest[]; outStable: Scored },
    {
      candidate,
      outCandidate,
      shadowed,
    }: { candidate: PendingRequest[]; outCandidate: Scored; shadowed: Set<PendingRequest> },
  ): void {
    if (candidate.length > 0) {
      const failed = outCandidate.scored.filter((x) => x === null).length;
      rollout.candidateScored(
        candidate.length,
        failed,
        outCandidate.msPerRequest * candidate.length,
      );
      this.metrics.candidateErrors(rollout.candidate.info.version, failed);
      this.metrics.trialLatency('candidate', outCandidate.msPerRequest);
    }
    if (stable.length > 0) {
      rollout.stableScored(stable.length, outStable.msPerRequest * stable.length);
      this.metrics.trialLatency('stable', outStable.msPerRequest);
    }
    if (shadowed.size > 0) {
      const stableIndex = new Map(stable.map((p, i) => [p, i]));
      candidate.forEach((p, i) => {
        if (!shadowed.has(p)) return;
        const mine = outCandidate.scored[i];
        const theirs = outStable.scored[stableIndex.get(p)!];
        if (!mine || !theirs) return;
        const diff = meanAbsDiff(theirs.outputs[0]?.data, mine.outputs[0]?.data);
        const agree = theirs.labelIndex === mine.labelIndex;
        rollout.compared(agree, diff);
        this.metrics.compared(agree, diff);
      });
    }
    if (outCandidate.shadow.length > 0) this.sendBestEffort(outCandidate.shadow, 'shadow');
    rollout.judge();
  }

  /** Shadow results and rollout events: never retried, never holding up offsets. */
  private sendBestEffort(records: OutboundRecord[], what: 'shadow' | 'event'): void {
    this.track(
      this.sink.send(records).then(
        () => {
          if (what === 'shadow') this.metrics.shadow('sent', records.length);
        },
        (err: unknown) => {
          if (what === 'shadow') this.metrics.shadow('failed', records.length);
          this.log.warn({ err, records: records.length }, `${what} records could not be sent`);
        },
      ),
    );
  }

  private rolloutEnded(event: RolloutEvent): void {
    this.metrics.rolloutEvent(
      event.type === 'rollback' ? 'rollback' : 'promotion',
      event.reason,
      event.version,
    );
    if (!this.options.eventsTopic) return;
    this.sendBestEffort(
      [
        {
          topic: this.options.eventsTopic,
          key: Buffer.from(event.model),
          value: Buffer.from(JSON.stringify(event)),
          headers: { 'content-type': 'application/json', 'streamscore.event': event.type },
        },
      ],
      'event',
    );
  }

  /** Scores on one leased version; `roles` counts the requests per role for the metrics. */
  private async scoreLeased(
    runner: ModelRunner,
    batch: PendingRequest[],
    roles: Partial<Record<Route, number>>,
    shadowed?: ReadonlySet<PendingRequest>,
  ): Promise<Scored> {
    // A hot-swappable model pins one version for the whole batch: its predicts and its labels.
    const lease = runner.lease?.();
    try {
      const model = lease?.model ?? runner;
      for (const [role, count] of Object.entries(roles)) {
        if (count > 0) this.metrics.modelRequests(model.info.version, role as Route, count);
      }
      return await this.scoreOn(model, batch, shadowed);
    } finally {
      lease?.release();
    }
  }

  /**
   * Scores a batch on one version. Requests in `shadowed` are only compared, never answered: their
   * failures are not dead-lettered and their results go to `shadow` (topics.shadow), not `out`.
   */
  private async scoreOn(
    model: ModelRunner,
    batch: PendingRequest[],
    shadowed?: ReadonlySet<PendingRequest>,
  ): Promise<Scored> {
    const { info } = model;
    const startedAt = this.clock.now();
    const answered: PendingRequest[] = [];
    const scoredValues: (ScoredValues | null)[] = [];
    const shadow: OutboundRecord[] = [];
    const out = Object.assign([] as OutboundRecord[], {
      answered,
      scored: scoredValues,
      shadow,
      msPerRequest: 0,
    });
    const traced = this.tracing?.batch(
      batch.map((p) => p.record),
      info,
      startedAt,
      batch.map((p) => p.receivedAt),
    );
    const { outputs, outcomes } = await predictNarrowing(
      model,
      batch,
      (items) => packBatch(items, info.inputs),
      {
        maxAttempts: this.options.maxAttempts,
        onFailure: (err, size) =>
          this.log.warn({ err, code: err.code, size }, 'model failed on a batch; narrowing it'),
      },
    );
    const inferredAt = this.clock.now();
    traced?.(inferredAt);
    for (const p of batch) this.metrics.requestWaited(startedAt - p.receivedAt);
    if (outputs) this.metrics.batch(batch.length, inferredAt - startedAt);
    out.msPerRequest = (inferredAt - startedAt) / batch.length;
    for (let i = 0; i < batch.length; i++) {
      const pending = batch[i]!;
      const outcome = outcomes?.[i];
      const isShadow = shadowed?.has(pending) === true;
      scoredValues.push(null);
      if (outcome && !outcome.ok) {
        if (isShadow) continue;
        out.push(
          this.deadLetter(pending.record, outcome.error, {
            requestId: pending.request.id,
            history: outcome.history,
          }),
        );
        continue;
      }
      try {
        const scored = outcome
          ? resultFor(outcome.outputs, outcome.index, outcome.size, info)
          : resultFor(outputs!, i, batch.length, info);
        const record = this.resultRecord(pending, scored, inferredAt, info);
        scoredValues[i] = scored;
        if (isShadow) {
          if (this.options.shadowTopic) shadow.push({ ...record, topic: this.options.shadowTopic });
          continue;
        }
        out.push(record);
        answered.push(pending);
      } catch (err) {
        if (isShadow) continue;
        const error = asStreamscoreError(err, 'ENCODE_FAILED');
        out.push(this.deadLetter(pending.record, error, { requestId: pending.request.id }));
      }
    }
    return out;
  }

  private resultRecord(
    pending: PendingRequest,
    scored: Pick<InferenceResult, 'outputs' | 'label' | 'labelIndex' | 'score'>,
    inferredAt: number,
    info: ModelInfo,
  ): OutboundRecord {
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
      topic: pending.codec.resultTopic,
      origin: pending.record,
      key: pending.record.key,
      value: pending.codec.encodeResult(result, pending.request, info),
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

  /** Sends through the ordered sender; acknowledged records become committable. */
  private async deliver(
    out: OutboundRecord[],
    records: InboundRecord[],
    answered?: PendingRequest[],
  ): Promise<void> {
    if (this.transactions) {
      const meta = new Map(answered?.map((p) => [p.record, p]));
      const sent = out.map((o) => this.withinRecordLimit(o));
      this.tracing?.sending(records, sent, this.resultTopics);
      this.transactions.deliver(
        records.map((record, i) => {
          const out = sent[i];
          const isResult = out != null && this.resultTopics.has(out.topic);
          return { record, out: out ?? null, meta: isResult ? meta.get(record) : undefined };
        }),
      );
      return;
    }
    const tracing = this.tracing;
    tracing?.sending(records, out, this.resultTopics);
    try {
      await this.sender.send(out);
    } catch (err) {
      if (err instanceof SendAbandoned) {
        this.log.warn(
          { records: out.length },
          'send abandoned at shutdown; records stay uncommitted',
        );
        if (tracing) for (const record of records) tracing.abandoned(record, 'shutdown');
        return;
      }
      throw err;
    }
    const ackedAt = this.clock.now();
    for (const record of records) this.tracker.ack(record, record.offset);
    if (tracing) {
      const at = tracing.now();
      for (let i = 0; i < records.length; i++) this.traceAnswered(records[i]!, out[i]!, at);
    }
    if (answered) {
      this.metrics.produced(answered.length);
      for (const p of answered) {
        this.metrics.endToEnd(ackedAt - (p.request.requestedAt ?? p.record.timestamp));
      }
    }
    this.applyBackpressure();
    this.scheduleCommit();
  }

  private traceAnswered(record: InboundRecord, out: OutboundRecord, at?: number): void {
    const code = out.headers[HEADER.errorCode];
    if (code === undefined) this.tracing!.answered(record, 'result', '', at);
    else this.tracing!.answered(record, 'dead-letter', String(code), at);
  }

  /** exactly-once: these answers and their offsets were committed in one transaction. */
  private committed(items: readonly Delivered<PendingRequest>[]): void {
    const at = this.clock.now();
    const tracedAt = this.tracing?.now();
    let answered = 0;
    for (const { record, out, meta } of items) {
      if (this.tracing) {
        if (out) this.traceAnswered(record, out, tracedAt);
        else this.tracing.abandoned(record, 'nothing could be sent (over kafka.maxRecordBytes)');
      }
      if (!meta) continue;
      answered++;
      this.metrics.endToEnd(at - (meta.request.requestedAt ?? record.timestamp));
    }
    this.metrics.produced(answered);
    this.applyBackpressure();
  }

  private scheduleCommit(retryAfterFailure = false): void {
    if (this.committingClosed || this.transactions) return;
    if (this.options.commitIntervalMs === 0 && !retryAfterFailure) {
      void this.commitNow();
      return;
    }
    if (this.cancelCommitTimer) return;
    // A failed commit is retried on its own: a partition with no new traffic would otherwise
    // keep its answered records uncommitted until something else arrives.
    const delay = retryAfterFailure
      ? Math.max(this.options.commitIntervalMs, COMMIT_RETRY_MS)
      : this.options.commitIntervalMs;
    this.cancelCommitTimer = this.clock.setTimer(delay, () => {
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
        // Not fatal: the retry carries the same or later offsets.
        this.log.warn({ err, offsets }, 'offset commit failed; will retry');
        this.scheduleCommit(true);
      }
    });
    return this.commitChain;
  }
}

/** What a version computed for one request, before encoding. */
type ScoredValues = Pick<InferenceResult, 'outputs' | 'label' | 'labelIndex' | 'score'>;

/**
 * A batch's answers in batch order (results or dead letters), the requests answered with a
 * result, and, from one version's model call (scoreOn), the values each request scored to (null:
 * failed), its shadow results and its time per request; merged answers leave those empty.
 */
type Scored = OutboundRecord[] & {
  answered: PendingRequest[];
  scored: (ScoredValues | null)[];
  shadow: OutboundRecord[];
  msPerRequest: number;
};

function noScores(): Scored {
  return Object.assign([] as OutboundRecord[], {
    answered: [],
    scored: [],
    shadow: [],
    msPerRequest: 0,
  });
}

/** Mean |a − b| over two score vectors; 0 when either is missing, 1 when their lengths differ. */
function meanAbsDiff(a: ArrayLike<number> | undefined, b: ArrayLike<number> | undefined): number {
  if (!a || !b) return 0;
  if (a.length !== b.length) return 1;
  let sum = 0;
  for (let i = 0; i < a.length; i++) sum += Math.abs(a[i]! - b[i]!);
  return a.length === 0 ? 0 : sum / a.length;
}

/** One codec for every topic (the worker's default when no per-topic codecs are given). */
function singleCodec(codec: InferenceCodec | undefined, resultTopic: string): RequestCodecs {
  if (!codec) throw new Error('InferenceWorker needs deps.codec or deps.codecs');
  const topicCodec: TopicCodec = {
    topic: '*',
    resultTopic,
    decodeRequest: (value) => codec.decodeRequest(value),
    encodeResult: (result) => codec.encodeResult(result),
  };
  return { forTopic: () => topicCodec };
}
