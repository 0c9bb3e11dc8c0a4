import { readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import path from 'node:path';
import { AvroCodec } from './codec/avro.js';
import { requireBrokers } from './config/load.js';
import type { StreamscoreConfig } from './config/schema.js';
import { Readiness } from './http/readiness.js';
import { startHttpServer, type HttpServer } from './http/server.js';
import { KafkajsTransactionalSink } from './kafka/kafkajs-transactions.js';
import { checkTopics, createKafka, KafkajsSink, KafkajsSource } from './kafka/kafkajs.js';
import { autotuneBatchSize } from './model/autotune.js';
import { selectBackend } from './model/backend.js';
import { startReplicaPool } from './model/replica-pool.js';
import { ModelReloader, type ReloadResult } from './model/reloader.js';
import { loadModel, resolveModelDir } from './model/repository.js';
import { ModelCatalog } from './model/catalog.js';
import { Rollout, RolloutError, type RolloutEvent } from './model/rollout.js';
import { SwappableModel } from './model/swappable.js';
import type { ModelRunner } from './model/types.js';
import { asStreamscoreError, StreamscoreError } from './errors.js';
import type { Logger } from './telemetry/logger.js';
import { WorkerMetrics } from './telemetry/metrics.js';
import { startMetricsSdk, type MetricsSdk } from './telemetry/metrics-sdk.js';
import { RequestTracing, startTracing } from './telemetry/tracing.js';
import { InferenceWorker, type StopReport } from './worker/worker.js';

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
        },
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
    setReload(next, pinned) {
      reload = next;
      if (pinned !== undefined) {
        reloadUnavailable = `model.version is pinned to ${pinned}; reload follows only "latest"`;
      }
    },
    async close() {
      reload = null;
      rollout = null;
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
  let stopped: Promise<StopReport> | null = null;
  return {
    ...service,
    readiness,
    http,
    stop() {
      readiness.stopping();
      observability.setReload(null);
      observability.setRollout(null);
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
  checkModelNames(config);
  const modelDir = await resolveModelDir(
    path.resolve(config.model.repository),
    config.model.name,
    config.model.version,
  );
  const canaryDir = config.model.canary ? await resolveCanaryDir(config) : null;
  if (canaryDir !== null && path.resolve(canaryDir) === path.resolve(modelDir)) {
    throw new StreamscoreError(
      'CONFIG_INVALID',
      `model.canary.version "${config.model.canary!.version}" is the version model.version ("${config.model.version}") serves; pin model.version to the stable version`,
      { details: { key: 'model.canary.version' } },
    );
  }
  const initial = await startModel(config, modelDir, log);
  let canary = null as ModelRunner | null;
  let extras: Extras = { versions: [], models: [] };
  const model = new SwappableModel(initial, {
    onDisposeError: (err, info) =>
      log.warn({ err, model: info.name, version: info.version }, 'disposing an old model failed'),
  });
  const ready = (async () => {
    const batchSize = await chooseBatchSize(config, initial, log);
    await initial.warmUp([1, batchSize]);
    if (canaryDir) canary = await startCanary(config, canaryDir, initial, batchSize, log);
    extras = await startExtras(config, batchSize, log);
    readiness.modelWarmed();
    const kafka = createKafka(config.kafka, log);
    await checkTopics(kafka, [
      ...config.topics.requests,
      config.topics.results,
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
    return { source, sink, transactions, batchSize };
  })();
  let started;
  try {
    started = await ready;
  } catch (err) {
    await model.dispose();
    await canary?.dispose();
    await disposeExtras(extras);
    throw err;
  }

  const tracing = startTracing(config.telemetry, log, PACKAGE_VERSION, sdk.meterProvider);
  const metrics = new WorkerMetrics(sdk.meter);
  const { source, sink, transactions, batchSize } = started;
  metrics.registerModelInfo(() => ({
    model: model.info.name,
    version: model.info.version,
    backend: model.info.backend,
    replicas: model.concurrency ?? 1,
  }));
  metrics.registerBatchSizeLimit(() => batchSize);
  const trial = config.model.canary;
  const rollout =
    canary && trial
      ? new Rollout({
          candidate: canary,
          fraction: trial.fraction,
          shadow: trial.shadow,
          thresholds: trial.rollback,
          promoteAfter: trial.promoteAfter,
          stableVersion: () => model.info.version,
          log,
        })
      : undefined;
  // Promoted: the candidate becomes the served version, as a hot swap does; the old one is
  // disposed after its last batch. Rolled back: the candidate is disposed at stop.
  rollout?.listen({ promoted: () => model.swap(rollout.candidate) });
  const catalog = new ModelCatalog(config.model.name).add(config.model.name, {
    main: model,
    pinned: [...extras.versions, ...(canary ? [canary] : [])],
  });
  for (const extra of extras.models) catalog.add(extra.info.name, { main: extra, pinned: [] });
  for (const entry of config.model.byTopic) {
    const [topic, name] = entry.split('=') as [string, string];
    catalog.route(topic, name);
  }
  const worker = new InferenceWorker({
    source,
    sink,
    codec: new AvroCodec({ resultFloatEncoding: config.output.floatEncoding }),
    model,
    log,
    metrics,
    onFatal,
    transactions,
    tracing: tracing ? new RequestTracing(tracing.tracer, config.kafka.groupId) : undefined,
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
  await worker.start();

  const reloader =
    config.model.version === 'latest'
      ? new ModelReloader({
          repository: path.resolve(config.model.repository),
          name: config.model.name,
          version: path.basename(modelDir),
          model,
          log,
          prepare: (dir) => prepareVersion(config, dir, batchSize, log),
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
    stop() {
      stopped ??= (async () => {
        await reloader?.close();
        return worker.stop();
      })().finally(async () => {
        await model.dispose();
        if (rollout?.state !== 'promoted') await canary?.dispose();
        await disposeExtras(extras);
        await tracing?.shutdown();
      });
      return stopped;
    },
  };
}

/** model.additional and model.byTopic agree with each other and with topics.requests. */
function checkModelNames(config: StreamscoreConfig): void {
  const names = [config.model.name, ...config.model.additional.map((e) => e.split('@')[0]!)];
  const served = new Set(names);
  if (served.size !== names.length) {
    throw new StreamscoreError(
      'CONFIG_INVALID',
      `model.additional names a model twice, or model.name (${config.model.name}) again: ${config.model.additional.join(', ')}`,
      { details: { key: 'model.additional' } },
    );
  }
  for (const entry of config.model.byTopic) {
    const [topic, name] = entry.split('=') as [string, string];
    const problem = !config.topics.requests.includes(topic)
      ? `${topic} is not one of topics.requests (${config.topics.requests.join(', ')})`
      : !served.has(name)
        ? `${name} is not served (model.name or model.additional: ${[...served].join(', ')})`
        : null;
    if (problem) {
      throw new StreamscoreError('CONFIG_INVALID', `model.byTopic "${entry}": ${problem}`, {
        details: { key: 'model.byTopic' },
      });
    }
  }
}

interface Extras {
  /** model.versions: more versions of model.name. */
  versions: WarmableRunner[];
  /** model.additional: more models, each at one version. */
  models: WarmableRunner[];
}

/**
 * model.versions and model.additional, loaded (checksums, card against signature) and warmed at
 * the batch size chosen for the default model. Any failure stops the start as a configuration
 * error naming the key and the file; what was loaded before it is disposed.
 */
async function startExtras(
  config: StreamscoreConfig,
  batchSize: number,
  log: Logger,
): Promise<Extras> {
  const extras: Extras = { versions: [], models: [] };
  const repository = path.resolve(config.model.repository);
  const wanted = [
    ...config.model.versions.map((version) => ({
      key: 'model.versions',
      name: config.model.name,
      version,
      into: extras.versions,
    })),
    ...config.model.additional.map((entry) => {
      const [name, version = 'latest'] = entry.split('@') as [string, string?];
      return { key: 'model.additional', name, version, into: extras.models };
    }),
  ];
  try {
    for (const { key, name, version, into } of wanted) {
      let dir = path.join(repository, name, version);
      let runner: WarmableRunner | null = null;
      try {
        dir = await resolveModelDir(repository, name, version);
        runner = await startModel(config, dir, log);
        await runner.warmUp([1, batchSize]);
      } catch (err) {
        await runner?.dispose();
        const error = asStreamscoreError(err, 'MODEL_INVALID');
        const file =
          typeof error.details.file === 'string' ? path.join(dir, error.details.file) : dir;
        throw new StreamscoreError(
          'CONFIG_INVALID',
          `${key}: ${name} version ${version}: ${file} could not be served (${error.code}: ${error.message})`,
          { cause: err, details: { key, file, code: error.code } },
        );
      }
      into.push(runner);
      log.info({ model: name, version: runner.info.version, dir }, `${key}: loaded and warm`);
    }
    return extras;
  } catch (err) {
    await disposeExtras(extras);
    throw err;
  }
}

async function disposeExtras(extras: Extras): Promise<void> {
  await Promise.all([...extras.versions, ...extras.models].map((r) => r.dispose()));
}

/** model.canary's version folder; a missing one is a configuration error naming the key. */
async function resolveCanaryDir(config: StreamscoreConfig): Promise<string> {
  const { repository, name, canary } = config.model;
  try {
    return await resolveModelDir(path.resolve(repository), name, canary!.version);
  } catch (err) {
    const error = asStreamscoreError(err, 'MODEL_NOT_FOUND');
    throw new StreamscoreError(
      'CONFIG_INVALID',
      `model.canary.version "${canary!.version}": ${error.message}`,
      { cause: err, details: { key: 'model.canary.version', ...error.details } },
    );
  }
}

/**
 * The canary candidate, loaded (checksums) and warmed like the stable version, with the same
 * inputs and outputs. It is fixed: no watch, no swap. Any failure stops the start as a
 * configuration error naming model.canary.version and the file, never a silent 100 % stable.
 */
async function startCanary(
  config: StreamscoreConfig,
  dir: string,
  stable: ModelRunner,
  batchSize: number,
  log: Logger,
): Promise<ModelRunner> {
  const { version, fraction } = config.model.canary!;
  let runner: WarmableRunner | null = null;
  try {
    runner = await startModel(config, dir, log);
    const same = (a: unknown, b: unknown) => JSON.stringify(a) === JSON.stringify(b);
    if (
      !same(runner.info.inputs, stable.info.inputs) ||
      !same(runner.info.outputs, stable.info.outputs)
    ) {
      throw new StreamscoreError(
        'MODEL_INVALID',
        `its inputs/outputs differ from version ${stable.info.version}'s`,
        { details: { file: 'card.json' } },
      );
    }
    await runner.warmUp([1, batchSize]);
    log.info({ model: runner.info.name, version, fraction, dir }, 'canary version loaded and warm');
    return runner;
  } catch (err) {
    await runner?.dispose();
    const error = asStreamscoreError(err, 'MODEL_INVALID');
    const file = typeof error.details.file === 'string' ? path.join(dir, error.details.file) : dir;
    throw new StreamscoreError(
      'CONFIG_INVALID',
      `model.canary.version "${version}": ${file} could not be served as the canary (${error.code}: ${error.message})`,
      { cause: err, details: { key: 'model.canary.version', file, code: error.code } },
    );
  }
}

type WarmableRunner = ModelRunner & { warmUp(batchSizes: readonly number[]): Promise<void> };

/** auto: one replica per core but one, which the main thread keeps for Kafka, decoding and encoding. */
export function replicaCount(setting: StreamscoreConfig['model']['replicas']): number {
  return setting === 'auto' ? Math.max(1, availableParallelism() - 1) : setting;
}

/** Replicas in worker threads, or (replicas: 0) the model on the main thread. */
async function startModel(
  config: StreamscoreConfig,
  modelDir: string,
  log: Logger,
): Promise<WarmableRunner> {
  const replicas = replicaCount(config.model.replicas);
  if (replicas > 0) {
    return startReplicaPool({ modelDir, backend: config.model.backend, replicas, log });
  }
  const selected = await selectBackend(config.model.backend, log);
  return loadModel(modelDir, { tf: selected.tf, backend: selected.backend, log });
}

/**
 * A new version for a hot swap, loaded and warmed as at start: batch-size autotune (logged) and
 * warm-up batches. The batcher's limit stays `batchSize`, the one chosen at start.
 */
async function prepareVersion(
  config: StreamscoreConfig,
  dir: string,
  batchSize: number,
  log: Logger,
): Promise<ModelRunner> {
  const runner = await startModel(config, dir, log);
  try {
    const tuned = await chooseBatchSize(config, runner, log);
    if (tuned !== batchSize) {
      log.info(
        { batchSize, autotuned: tuned, dir },
        'batch size limit stays as chosen at start until the worker restarts',
      );
    }
    await runner.warmUp([...new Set([1, tuned, batchSize])]);
    return runner;
  } catch (err) {
    await runner.dispose();
    throw err;
  }
}

/** The autotuned batch size, or maxBatchSize when autotune is off. Logged either way. */
async function chooseBatchSize(
  config: StreamscoreConfig,
  model: WarmableRunner,
  log: Logger,
): Promise<number> {
  const { maxBatchSize, latencyBudgetMs, autotune } = config.batching;
  if (!autotune) {
    log.info({ batchSize: maxBatchSize, autotune: false }, 'batch size fixed by configuration');
    return maxBatchSize;
  }
  const { chosen, table } = await autotuneBatchSize(model, {
    maxBatchSize,
    latencyBudgetMs,
    concurrency: model.concurrency ?? 1,
  });
  log.info(
    {
      batchSize: chosen,
      latencyBudgetMs,
      table: table.map((row) => ({
        batchSize: row.batchSize,
        samplesPerSec: Math.round(row.samplesPerSec),
        batchMs: Number(row.batchMs.toFixed(2)),
      })),
    },
    'batch size autotuned',
  );
  return chosen;
}
