import {
  metrics,
  type Attributes,
  type Counter,
  type Histogram,
  type Meter,
} from '@opentelemetry/api';

/** Bucket boundaries for latencies in milliseconds: sub-millisecond batches up to 5 s stalls. */
export const LATENCY_BUCKETS_MS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000];

/** One partition's consumer lag: records between the last one fetched and the high watermark. */
export interface PartitionLag {
  topic: string;
  partition: number;
  lag: number;
}

/**
 * The worker's instruments, through the OpenTelemetry metrics API. `streamscore run` passes the
 * meter of its own MeterProvider (src/telemetry/metrics-sdk.ts: Prometheus at /metrics, OTLP when
 * configured); without one the API's global meter is used, which is a no-op unless an SDK was
 * registered before this object was made (the API's no-op meter never upgrades an instrument made
 * before registration). A local snapshot is kept as well so the CLI, the demo and tests can read
 * figures without an exporter.
 */
export class WorkerMetrics {
  private readonly meter: Meter;
  private readonly recordsIn: Counter;
  private readonly resultsOut: Counter;
  private readonly deadLettered: Counter;
  private readonly batchSize: Histogram;
  private readonly inferenceMs: Histogram;
  private readonly endToEndMs: Histogram;
  private readonly waitMs: Histogram;
  private readonly reread: Counter;
  private readonly sendRetries: Counter;
  private readonly swaps: Counter;
  private readonly modelRequestsCounter: Counter;
  private readonly rolloutCompared: Counter;
  private readonly rolloutScoreDiff: Histogram;
  private readonly rolloutCandidateErrors: Counter;
  private readonly rolloutPerRequestMs: Histogram;
  private readonly rolloutEvents: Counter;
  private readonly shadowResults: Counter;

  readonly snapshot = {
    received: 0,
    produced: 0,
    deadLettered: 0,
    deadLetteredByCode: {} as Record<string, number>,
    batches: 0,
    sendRetries: 0,
    skipped: 0,
    rollouts: [] as { type: string; reason: string; version: string }[],
    shadowSent: 0,
    shadowFailed: 0,
  };

  constructor(meter: Meter = metrics.getMeter('streamscore')) {
    this.meter = meter;
    this.recordsIn = meter.createCounter('streamscore.records.received', {
      description: 'Request records read from Kafka',
    });
    this.resultsOut = meter.createCounter('streamscore.results.produced', {
      description: 'Results acknowledged by the broker',
    });
    this.deadLettered = meter.createCounter('streamscore.records.dead_lettered', {
      description: 'Records sent to the dead-letter topic, by error code and category',
    });
    this.batchSize = meter.createHistogram('streamscore.batch.size', {
      description: 'Requests per model call',
      advice: { explicitBucketBoundaries: [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024] },
    });
    this.inferenceMs = meter.createHistogram('streamscore.inference.duration', {
      description: 'Model call duration per batch',
      unit: 'ms',
      advice: { explicitBucketBoundaries: LATENCY_BUCKETS_MS },
    });
    this.endToEndMs = meter.createHistogram('streamscore.request.duration', {
      description: 'Request time (requestedAt or record timestamp) to result acknowledged',
      unit: 'ms',
      advice: { explicitBucketBoundaries: LATENCY_BUCKETS_MS },
    });
    this.waitMs = meter.createHistogram('streamscore.request.wait', {
      description:
        'Time from a request being read to its batch starting inference (queue and batch wait)',
      unit: 'ms',
      advice: { explicitBucketBoundaries: LATENCY_BUCKETS_MS },
    });
    this.reread = meter.createCounter('streamscore.records.skipped', {
      description:
        'Records not processed: read again while their first copy was in flight, or read from a partition not open for transactions yet (exactly-once)',
    });
    this.sendRetries = meter.createCounter('streamscore.send.retries', {
      description: 'Produce attempts that failed and were retried',
    });
    this.swaps = meter.createCounter('streamscore.model.swaps', {
      description:
        'New model versions swapped in (outcome=swapped) or refused (outcome=refused, with code)',
    });
    this.modelRequestsCounter = meter.createCounter('streamscore.model.requests', {
      description:
        'Requests scored, by model version and role (stable; canary or shadow with model.canary set)',
    });
    this.rolloutCompared = meter.createCounter('streamscore.rollout.compared', {
      description:
        'Shadowed requests scored by both versions, by whether their top-1 labels agree (agree=true|false)',
    });
    this.rolloutScoreDiff = meter.createHistogram('streamscore.rollout.score_diff', {
      description:
        'Mean absolute difference between the stable and the candidate scores of a shadowed request',
      advice: { explicitBucketBoundaries: [1e-6, 1e-4, 1e-3, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1] },
    });
    this.rolloutCandidateErrors = meter.createCounter('streamscore.rollout.candidate_errors', {
      description: 'Requests the candidate version failed to score (canary or shadow), by version',
    });
    this.rolloutPerRequestMs = meter.createHistogram('streamscore.rollout.inference_per_request', {
      description:
        'Model call duration divided by its batch size, by role (stable, candidate) while a candidate is on trial',
      unit: 'ms',
      advice: { explicitBucketBoundaries: [0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50] },
    });
    this.rolloutEvents = meter.createCounter('streamscore.rollout.events', {
      description:
        'Candidates rolled back (type=rollback) or promoted (type=promotion), by reason and version',
    });
    this.shadowResults = meter.createCounter('streamscore.rollout.shadow_results', {
      description: 'Candidate results written to topics.shadow (outcome=sent|failed)',
    });
  }

  /** A shadowed request was scored by both versions. */
  compared(agree: boolean, meanAbsDiff: number): void {
    this.rolloutCompared.add(1, { agree: String(agree) });
    this.rolloutScoreDiff.record(meanAbsDiff);
  }

  /** The candidate could not score these requests. */
  candidateErrors(version: string, count: number): void {
    if (count > 0) this.rolloutCandidateErrors.add(count, { version });
  }

  /** One model call's time per request, while a candidate is on trial. */
  trialLatency(role: 'stable' | 'candidate', msPerRequest: number): void {
    this.rolloutPerRequestMs.record(msPerRequest, { role });
  }

  /** A rollback or promotion. */
  rolloutEvent(type: 'rollback' | 'promotion', reason: string, version: string): void {
    this.rolloutEvents.add(1, { type, reason, version });
    this.snapshot.rollouts.push({ type, reason, version });
  }

  /** Shadow results acknowledged by the broker, or lost (best effort: never retried). */
  shadow(outcome: 'sent' | 'failed', count: number): void {
    this.shadowResults.add(count, { outcome });
    if (outcome === 'sent') this.snapshot.shadowSent += count;
    else this.snapshot.shadowFailed += count;
  }

  /** Requests handed to the model, by the version that scores them and its role (model.canary). */
  modelRequests(version: string, role: 'stable' | 'canary' | 'shadow', count: number): void {
    this.modelRequestsCounter.add(count, { version, role });
  }

  /** A hot swap: a new version swapped in, or refused (with its error code). */
  modelSwap(outcome: 'swapped' | 'refused', code?: string): void {
    this.swaps.add(1, code === undefined ? { outcome } : { outcome, code });
  }

  /** Exports the running model and backend as an info-style gauge (value 1). */
  registerModelInfo(attributes: () => Attributes): void {
    this.meter
      .createObservableGauge('streamscore.model.info', {
        description: 'Model, version and tfjs backend being served (value is always 1)',
      })
      .addCallback((result) => result.observe(1, attributes()));
  }

  /** Exports the batch size in use (autotuned or configured). */
  registerBatchSizeLimit(size: () => number): void {
    this.meter
      .createObservableGauge('streamscore.batch.size.limit', {
        description: 'Largest batch the worker forms: the autotuned or configured batch size',
      })
      .addCallback((result) => result.observe(size()));
  }

  /** Exports the consumer lag of every assigned partition, read when metrics are collected. */
  registerConsumerLag(lag: () => Iterable<PartitionLag>): void {
    this.meter
      .createObservableGauge('streamscore.consumer.lag', {
        description:
          'Records of the partition behind its high watermark, as of the last fetch that returned records',
        unit: '{record}',
      })
      .addCallback((result) => {
        for (const p of lag()) result.observe(p.lag, { topic: p.topic, partition: p.partition });
      });
  }

  /** Exports the number of requests read and not yet answered (acknowledged or committed). */
  registerInFlight(count: () => number): void {
    this.meter
      .createObservableGauge('streamscore.requests.in_flight', {
        description: 'Request records read and not yet answered',
        unit: '{request}',
      })
      .addCallback((result) => result.observe(count()));
  }

  /**
   * Exports the ratio at which new traces are kept now: 0 while tracing is paused
   * (POST /tracing/pause). Registered only when tracing was started.
   */
  registerTracingSampleRatio(ratio: () => number): void {
    this.meter
      .createObservableGauge('streamscore.tracing.sample_ratio', {
        description:
          'Share of new traces kept (requests with a traceparent follow their producer); 0 while tracing is paused',
      })
      .addCallback((result) => result.observe(ratio()));
  }

  skipped(count: number): void {
    this.snapshot.skipped += count;
    this.reread.add(count);
  }

  received(count: number): void {
    this.snapshot.received += count;
    this.recordsIn.add(count);
  }

  produced(count: number): void {
    this.snapshot.produced += count;
    this.resultsOut.add(count);
  }

  deadLetter(code: string, category: string): void {
    this.snapshot.deadLettered++;
    this.snapshot.deadLetteredByCode[code] = (this.snapshot.deadLetteredByCode[code] ?? 0) + 1;
    this.deadLettered.add(1, { code, category });
  }

  batch(size: number, inferenceMs: number): void {
    this.snapshot.batches++;
    this.batchSize.record(size);
    this.inferenceMs.record(inferenceMs);
  }

  endToEnd(ms: number): void {
    this.endToEndMs.record(ms);
  }

  /** A request waited `ms` from being read to its batch starting inference. */
  requestWaited(ms: number): void {
    this.waitMs.record(ms);
  }

  sendRetry(): void {
    this.snapshot.sendRetries++;
    this.sendRetries.add(1);
  }
}
