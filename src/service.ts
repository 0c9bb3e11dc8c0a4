import { readFileSync } from 'node:fs';
import path from 'node:path';
import { requireBrokers } from './config/load.js';
import type { StreamscoreConfig } from './config/schema.js';
import { Readiness } from './http/readiness.js';
import { startHttpServer, type HttpServer } from './http/server.js';
import { tracingEndpoints } from './http/tracing-endpoints.js';
import { KafkajsTransactionalSink } from './kafka/kafkajs-transactions.js';
import { checkTopics, createKafka, KafkajsSink, KafkajsSource } from './kafka/kafkajs.js';
import { ModelReloader, type ReloadResult } from './model/reloader.js';
import { Rollout, RolloutError, type RolloutEvent } from './model/rollout.js';
import { SwappableModel } from './model/swappable.js';
import { startScoring } from './serving.js';
import type { Logger } from './telemetry/logger.js';
import { WorkerMetrics } from './telemetry/metrics.js';
import { startMetricsSdk, type MetricsSdk } from './telemetry/metrics-sdk.js';
import { startTracing, type RequestTracing } from './telemetry/tracing.js';
import { InferenceWorker, type StopReport } from './worker/worker.js';

export { replicaCount } from './serving.js';

/** src/ and dist/ both sit one level below package.json. */
const PACKAGE_VERSION = (
  JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as {
    version: string;
  }
).version;

export interface Service {
  worker: InferenceWorker;
  /** The model being served: a SwappableModel, so a new version can be swapped in. */
  model: SwappableModel;
  /** Hot swap (model.version: latest): POST /models/reload and the folder watch; else null. */
  reloader: ModelReloader | null;
  /** model.canary: the candidate on trial, its routing and judge; else undefined. */
  rollout: Rollout | undefined;
  /** Per-request tracing and its run-time switch (GET/POST /tracing); null when tracing is off. */
  tracing: RequestTracing | null;
  /** What GET /readyz answers (model warm, partitions assigned, connected, not stopping). */
  readiness: Readiness;
  /** The /healthz, /readyz and /metrics server; null with http.enabled: false. */
  http: HttpServer | null;
  /** Drains, commits, leaves the group and frees the model. Safe to call more than once. */
  stop(): Promise<StopReport>;
}

export interface StartServiceOptions {
  log: Logger;
  /** Called when the Kafka client gives up for good; the caller should exit so it is restarted. */
  onFatal?: (error: Error) => void;
}

/** Metrics SDK, readiness and the HTTP server: up before the model loads, down after the rest. */
interface Observability {
  sdk: MetricsSdk;
  readiness: Readiness;
  http: HttpServer | null;
  /** Sets what POST /models/reload does once the worker runs. */
  setReload(reload: (() => Promise<ReloadResult>) | null, pinned?: string): void;
  /** Sets the candidate POST /models/promote and /models/rollback act on. */
  setRollout(rollout: Rollout | null): void;
  /** Sets what GET /tracing, POST /tracing/pause and /tracing/resume act on. */
  setTracing(tracing: RequestTracing | null): void;
  close(): Promise<void>;
}

/**
 * Starts the metrics SDK (before any instrument exists) and the HTTP server, so /healthz answers
 * while the model loads and warms up and /readyz says what is still missing.
 */
async function startObservability(config: StreamscoreConfig, log: Logger): Promise<Observability> {
  const sdk = startMetricsSdk(config.telemetry, {
    log,
    version: PACKAGE_VERSION,
    prometheus: config.http.enabled,
  });
  const readiness = new Readiness();
  readiness.onChange((state) => {
    if (state.ready) log.info({ checks: state.checks }, 'ready');
    else if (state.checks.stopping) log.info({ failing: state.failing }, 'not ready: stopping');
    else log.warn({ failing: state.failing, checks: state.checks }, 'not ready');
  });
  let reload: (() => Promise<ReloadResult>) | null = null;
  let reloadUnavailable = 'the model is still loading';
  let rollout: Rollout | null = null;
  let tracing: RequestTracing | null = null;
  const tracingSwitch = tracingEndpoints(
    () => tracing,
    log,
    config.telemetry.otlpEndpoint !== null && config.telemetry.tracesSampleRatio > 0,
  );
  const endTrial = (end: (r: Rollout) => RolloutEvent) => async () => {
    if (!rollout) return { status: 409, body: { error: 'no candidate: model.canary is not set' } };
    try {
      return { status: 200, body: end(rollout) };
    } catch (err) {
      if (err instanceof RolloutError) return { status: 409, body: { error: err.message } };
      throw err;
    }
  };
  let http: HttpServer | null = null;
  try {
    if (config.http.enabled) {
      http = await startHttpServer({
        host: config.http.host,
        port: config.http.port,
        readiness,
        metrics: sdk.scrape,
        reload: async () => {
          if (!reload) return { status: 409, body: { error: reloadUnavailable } };
          const result = await reload();
          return { status: result.outcome === 'refused' ? 422 : 200, body: result };
        },
        actions: {
          '/models/promote': endTrial((r) => r.promote('http')),
          '/models/rollback': endTrial((r) => r.rollback('manual', 'http')),
          ...tracingSwitch.actions,
        },
        views: tracingSwitch.views,
        log,
      });
    }
  } catch (err) {
    await sdk.shutdown();
    throw err;
  }
  return {
    sdk,
    readiness,
    http,
    setRollout(next) {
      rollout = next;
    },
    setTracing(next) {
      tracing = next;
    },
    setReload(next, pinned) {
      reload = next;
      if (pinned !== undefined) {
        reloadUnavailable = `model.version is pinned to ${pinned}; reload follows only "latest"`;
      }
    },
    async close() {
      reload = null;
      rollout = null;
      tracing = null;
      reloadUnavailable = 'the worker is stopping';
      await http?.close();
      await sdk.shutdown();
    },
  };
}

/** Wires the edges (kafkajs, Avro, tfjs) to the worker core and starts consuming. */
export async function startService(
  config: StreamscoreConfig,
  options: StartServiceOptions,
): Promise<Service> {
  requireBrokers(config);
  const observability = await startObservability(config, options.log);
  let service: Omit<Service, 'readiness' | 'http'>;
  try {
    service = await startWorker(config, options, observability);
  } catch (err) {
    await observability.close();
    throw err;
  }
  const { readiness, http } = observability;
  observability.setReload(
    service.reloader ? () => service.reloader!.reload('http') : null,
    service.reloader ? undefined : config.model.version,
  );
  observability.setRollout(service.rollout ?? null);
  observability.setTracing(service.tracing);
  let stopped: Promise<StopReport> | null = null;
  return {
    ...service,
    readiness,
    http,
    stop() {
      readiness.stopping();
      observability.setReload(null);
      observability.setRollout(null);
      observability.setTracing(null);
      // /healthz keeps answering while the worker drains; the final OTLP push comes last.
      stopped ??= service.stop().finally(() => observability.close());
      return stopped;
    },
  };
}

async function startWorker(
  config: StreamscoreConfig,
  { log, onFatal }: StartServiceOptions,
  { sdk, readiness }: Observability,
): Promise<Omit<Service, 'readiness' | 'http'>> {
  // Tracing starts first: its thread loads the SDK while the model loads and warms up.
  const tracing = startTracing(config.telemetry, log, {
    version: PACKAGE_VERSION,
    groupId: config.kafka.groupId,
    meterProvider: sdk.meterProvider,
  });
  let scoring;
  try {
    scoring = await startScoring(config, { log });
  } catch (err) {
    await tracing?.shutdown();
    throw err;
  }
  const { codecs, serving } = scoring;
  const { model, rollout, catalog, batchSize, modelDir } = serving;
  const ready = (async () => {
    readiness.modelWarmed();
    const kafka = createKafka(config.kafka, log);
    await checkTopics(kafka, [
      ...config.topics.requests,
      ...new Set([config.topics.results, ...codecs.resultTopics]),
      config.topics.deadLetter,
      ...[config.topics.failed, config.topics.shadow, config.topics.events].filter(
        (t): t is string => t !== null,
      ),
    ]);
    const sink = new KafkajsSink(kafka, { compression: config.kafka.compression, log });
    const exactlyOnce = config.delivery.mode === 'exactly-once';
    // exactly-once produces through one transactional producer per input partition instead.
    // Shadow results and rollout events are sent outside transactions, through the plain sink.
    if (!exactlyOnce || config.topics.shadow || config.topics.events) await sink.connect();
    const transactions = exactlyOnce
      ? new KafkajsTransactionalSink(kafka, {
          groupId: config.kafka.groupId,
          transactionalIdPrefix: config.delivery.transactionalIdPrefix ?? config.kafka.groupId,
          compression: config.kafka.compression,
          maxSendBytes: config.kafka.maxSendBytes,
          log,
        })
      : undefined;
    const source = new KafkajsSource(kafka, {
      groupId: config.kafka.groupId,
      topics: config.topics.requests,
      fromBeginning: config.kafka.fromBeginning,
      sessionTimeoutMs: config.kafka.sessionTimeoutMs,
      fetchMaxWaitMs: config.kafka.fetchMaxWaitMs,
      fetchMaxBytesPerPartition: config.kafka.fetchMaxBytesPerPartition,
      log,
    });
    return { source, sink, transactions };
  })();
  let started;
  try {
    started = await ready;
  } catch (err) {
    await serving.dispose();
    await tracing?.shutdown();
    throw err;
  }
  const metrics = new WorkerMetrics(sdk.meter);
  const { source, sink, transactions } = started;
  metrics.registerModelInfo(() => ({
    model: model.info.name,
    version: model.info.version,
    backend: model.info.backend,
    replicas: model.concurrency ?? 1,
  }));
  metrics.registerBatchSizeLimit(() => batchSize);
  const worker = new InferenceWorker({
    source,
    sink,
    codecs,
    model,
    log,
    metrics,
    onFatal,
    transactions,
    tracing: tracing?.requests,
    rollout,
    catalog,
    options: {
      resultTopic: config.topics.results,
      deadLetterTopic: config.topics.deadLetter,
      failedTopic: config.topics.failed ?? undefined,
      maxAttempts: config.delivery.maxAttempts,
      maxBatchSize: batchSize,
      maxBatchBytes: config.batching.maxBatchBytes,
      maxDelayMs: config.batching.maxDelayMs,
      maxQueued: config.batching.maxQueued,
      maxSendBytes: config.kafka.maxSendBytes,
      maxRecordBytes: config.kafka.maxRecordBytes,
      maxPayloadBytes: config.limits.maxPayloadBytes,
      commitIntervalMs: config.commit.intervalMs,
      drainTimeoutMs: config.shutdown.drainTimeoutMs,
      shadowTopic: config.topics.shadow,
      eventsTopic: config.topics.events,
    },
  });
  source.watch({
    onAssignment: (partitions) => readiness.assigned(partitions.length),
    onConnectionLost: (reason) => readiness.connectionLost(reason),
  });
  metrics.registerConsumerLag(() => source.consumerLag());
  metrics.registerInFlight(() => worker.inFlight);
  const requestTracing = tracing?.requests;
  if (requestTracing) {
    metrics.registerTracingSampleRatio(() => {
      const { on, sampleRatio } = requestTracing.state;
      return on ? sampleRatio : 0;
    });
  }
  await tracing?.ready;
  await worker.start();

  const reloader =
    config.model.version === 'latest'
      ? new ModelReloader({
          repository: path.resolve(config.model.repository),
          name: config.model.name,
          version: path.basename(modelDir),
          model,
          log,
          prepare: (dir) => serving.prepareVersion(dir),
          onResult: (result) => {
            if (result.outcome !== 'unchanged')
              metrics.modelSwap(result.outcome, result.error?.code);
          },
        })
      : null;
  if (reloader && config.model.watch) reloader.watch();

  let stopped: Promise<StopReport> | null = null;
  return {
    worker,
    model,
    reloader,
    rollout,
    tracing: tracing?.requests ?? null,
    stop() {
      stopped ??= (async () => {
        await reloader?.close();
        return worker.stop();
      })().finally(async () => {
        await serving.dispose();
        await tracing?.shutdown();
      });
      return stopped;
    },
  };
}
