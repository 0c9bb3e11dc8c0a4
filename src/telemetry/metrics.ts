import { metrics, type Attributes } from '@opentelemetry/api';

/**
 * The worker's instruments, through the OpenTelemetry metrics API: without an SDK they cost
 * nothing; an exporter registered at start (Prometheus/OTLP) picks them up. A local snapshot is
 * kept as well so the CLI, the demo and tests can read figures without an exporter.
 */
export class WorkerMetrics {
  private readonly meter = metrics.getMeter('streamscore');
  private readonly recordsIn = this.meter.createCounter('streamscore.records.received', {
    description: 'Request records read from Kafka',
  });
  private readonly resultsOut = this.meter.createCounter('streamscore.results.produced', {
    description: 'Results acknowledged by the broker',
  });
  private readonly deadLettered = this.meter.createCounter('streamscore.records.dead_lettered', {
    description: 'Records sent to the dead-letter topic, by error code and category',
  });
  private readonly batchSize = this.meter.createHistogram('streamscore.batch.size', {
    description: 'Requests per model call',
    advice: { explicitBucketBoundaries: [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024] },
  });
  private readonly inferenceMs = this.meter.createHistogram('streamscore.inference.duration', {
    description: 'Model call duration per batch',
    unit: 'ms',
  });
  private readonly endToEndMs = this.meter.createHistogram('streamscore.request.duration', {
    description: 'Request time (requestedAt or record timestamp) to result acknowledged',
    unit: 'ms',
  });
  private readonly reread = this.meter.createCounter('streamscore.records.skipped', {
    description:
      'Records not processed: read again while their first copy was in flight, or read from a partition not open for transactions yet (exactly-once)',
  });
  private readonly sendRetries = this.meter.createCounter('streamscore.send.retries', {
    description: 'Produce attempts that failed and were retried',
  });

  readonly snapshot = {
    received: 0,
    produced: 0,
    deadLettered: 0,
    deadLetteredByCode: {} as Record<string, number>,
    batches: 0,
    sendRetries: 0,
    skipped: 0,
  };

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

  sendRetry(): void {
    this.snapshot.sendRetries++;
    this.sendRetries.add(1);
  }
}
