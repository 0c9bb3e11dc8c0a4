import path from 'node:path';
import { AvroCodec } from './codec/avro.js';
import { requireBrokers } from './config/load.js';
import type { StreamscoreConfig } from './config/schema.js';
import { checkTopics, createKafka, KafkajsSink, KafkajsSource } from './kafka/kafkajs.js';
import { selectBackend } from './model/backend.js';
import { loadModel, resolveModelDir } from './model/repository.js';
import type { ModelRunner } from './model/types.js';
import type { Logger } from './telemetry/logger.js';
import { WorkerMetrics } from './telemetry/metrics.js';
import { InferenceWorker, type StopReport } from './worker/worker.js';

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
  const selected = await selectBackend(config.model.backend, log);
  const modelDir = await resolveModelDir(
    path.resolve(config.model.repository),
    config.model.name,
    config.model.version,
  );
  const model = await loadModel(modelDir, { tf: selected.tf, backend: selected.backend, log });
  const ready = (async () => {
    await model.warmUp([1, config.batching.maxBatchSize]);
    const kafka = createKafka(config.kafka, log);
    await checkTopics(kafka, [
      ...config.topics.requests,
      config.topics.results,
      config.topics.deadLetter,
    ]);
    const sink = new KafkajsSink(kafka, { compression: config.kafka.compression, log });
    await sink.connect();
    const source = new KafkajsSource(kafka, {
      groupId: config.kafka.groupId,
      topics: config.topics.requests,
      fromBeginning: config.kafka.fromBeginning,
      sessionTimeoutMs: config.kafka.sessionTimeoutMs,
      fetchMaxWaitMs: config.kafka.fetchMaxWaitMs,
      log,
    });
    return { source, sink };
  })();
  let edges;
  try {
    edges = await ready;
  } catch (err) {
    await model.dispose();
    throw err;
  }

  const metrics = new WorkerMetrics();
  metrics.registerModelInfo(() => ({
    model: model.info.name,
    version: model.info.version,
    backend: model.info.backend,
    package: selected.package,
  }));
  const worker = new InferenceWorker({
    ...edges,
    codec: new AvroCodec({ resultFloatEncoding: config.output.floatEncoding }),
    model,
    log,
    metrics,
    onFatal,
    options: {
      resultTopic: config.topics.results,
      deadLetterTopic: config.topics.deadLetter,
      maxBatchSize: config.batching.maxBatchSize,
      maxDelayMs: config.batching.maxDelayMs,
      maxQueued: config.batching.maxQueued,
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
      stopped ??= worker.stop().finally(() => model.dispose());
      return stopped;
    },
  };
}
