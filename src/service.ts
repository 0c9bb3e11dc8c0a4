import { readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import path from 'node:path';
import { AvroCodec } from './codec/avro.js';
import { requireBrokers } from './config/load.js';
import type { StreamscoreConfig } from './config/schema.js';
import { KafkajsTransactionalSink } from './kafka/kafkajs-transactions.js';
import { checkTopics, createKafka, KafkajsSink, KafkajsSource } from './kafka/kafkajs.js';
import { autotuneBatchSize } from './model/autotune.js';
import { selectBackend } from './model/backend.js';
import { startReplicaPool } from './model/replica-pool.js';
import { loadModel, resolveModelDir } from './model/repository.js';
import type { ModelRunner } from './model/types.js';
import type { Logger } from './telemetry/logger.js';
import { WorkerMetrics } from './telemetry/metrics.js';
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
  model: ModelRunner;
  /** Drains, commits, leaves the group and frees the model. Safe to call more than once. */
  stop(): Promise<StopReport>;
}

export interface StartServiceOptions {
  log: Logger;
  /** Called when the Kafka client gives up for good; the caller should exit so it is restarted. */
  onFatal?: (error: Error) => void;
}

/** Wires the edges (kafkajs, Avro, tfjs) to the worker core and starts consuming. */
export async function startService(
  config: StreamscoreConfig,
  { log, onFatal }: StartServiceOptions,
): Promise<Service> {
  requireBrokers(config);
  const modelDir = await resolveModelDir(
    path.resolve(config.model.repository),
    config.model.name,
    config.model.version,
  );
  const model = await startModel(config, modelDir, log);
  const ready = (async () => {
    const batchSize = await chooseBatchSize(config, model, log);
    await model.warmUp([1, batchSize]);
    const kafka = createKafka(config.kafka, log);
    await checkTopics(kafka, [
      ...config.topics.requests,
      config.topics.results,
      config.topics.deadLetter,
      ...(config.topics.failed ? [config.topics.failed] : []),
    ]);
    const sink = new KafkajsSink(kafka, { compression: config.kafka.compression, log });
    const exactlyOnce = config.delivery.mode === 'exactly-once';
    // exactly-once produces through one transactional producer per input partition instead.
    if (!exactlyOnce) await sink.connect();
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
    throw err;
  }

  const tracing = startTracing(config.telemetry, log, PACKAGE_VERSION);
  const metrics = new WorkerMetrics();
  const { source, sink, transactions, batchSize } = started;
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
    codec: new AvroCodec({ resultFloatEncoding: config.output.floatEncoding }),
    model,
    log,
    metrics,
    onFatal,
    transactions,
    tracing: tracing ? new RequestTracing(tracing.tracer, config.kafka.groupId) : undefined,
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
    },
  });
  await worker.start();

  let stopped: Promise<StopReport> | null = null;
  return {
    worker,
    model,
    stop() {
      stopped ??= worker.stop().finally(async () => {
        await model.dispose();
        await tracing?.shutdown();
      });
      return stopped;
    },
  };
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
