import { TopicCodecs } from './codec/topics.js';
import { availableParallelism } from 'node:os';
import path from 'node:path';
import type { StreamscoreConfig } from './config/schema.js';
import { asStreamscoreError, StreamscoreError } from './errors.js';
import { autotuneBatchSize } from './model/autotune.js';
import { selectBackend } from './model/backend.js';
import { ModelCatalog } from './model/catalog.js';
import { startReplicaPool } from './model/replica-pool.js';
import { loadModel, resolveModelDir } from './model/repository.js';
import { Rollout } from './model/rollout.js';
import { SwappableModel } from './model/swappable.js';
import type { ModelRunner } from './model/types.js';
import type { Logger } from './telemetry/logger.js';

/**
 * The model side of the worker, loaded and warm: what the service and the local pipeline
 * (`score --local`, `replay`) both serve, so the same configuration scores the same way.
 */
export interface Serving {
  /** The model being served: a SwappableModel, so a new version can be swapped in. */
  model: SwappableModel;
  /** model.canary's candidate, or null. Owned by `rollout` once that exists. */
  canary: ModelRunner | null;
  /** model.versions and model.additional, loaded and warm. */
  extras: Extras;
  /** Every served model and pinned version, and model.byTopic's routes. */
  catalog: ModelCatalog;
  /** model.canary: the candidate on trial, its routing and judge; else undefined. */
  rollout: Rollout | undefined;
  /** The batcher's limit: autotuned, or batching.maxBatchSize. */
  batchSize: number;
  /** The version folder model.version resolved to. */
  modelDir: string;
  /** A new version for a hot swap, loaded and warmed as at start (for ModelReloader). */
  prepareVersion(dir: string): Promise<ModelRunner>;
  /**
   * Frees the model, the canary (unless promoted: then it is the model) and the extras.
   * Safe to call more than once.
   */
  dispose(): Promise<void>;
}

export interface StartServingOptions {
  log: Logger;
}

/**
 * Resolves model.version, starts the model (replicas or main thread), chooses the batch size,
 * warms up, loads the canary and the extras, and builds the Rollout and the ModelCatalog. On any
 * failure what was loaded is disposed before the error is thrown.
 */
export async function startServing(
  config: StreamscoreConfig,
  { log }: StartServingOptions,
): Promise<Serving> {
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
  let batchSize: number;
  let rollout: Rollout | undefined;
  let catalog: ModelCatalog;
  try {
    batchSize = await chooseBatchSize(config, initial, log);
    await initial.warmUp([1, batchSize]);
    if (canaryDir) canary = await startCanary(config, canaryDir, initial, batchSize, log);
    extras = await startExtras(config, batchSize, log);
    const trial = config.model.canary;
    rollout =
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
    // disposed after its last batch. Rolled back: the candidate is disposed at dispose().
    const promoting = rollout;
    promoting?.listen({ promoted: () => model.swap(promoting.candidate) });
    catalog = new ModelCatalog(config.model.name).add(config.model.name, {
      main: model,
      pinned: [...extras.versions, ...(canary ? [canary] : [])],
    });
    for (const extra of extras.models) catalog.add(extra.info.name, { main: extra, pinned: [] });
    for (const entry of config.model.byTopic) {
      const [topic, name] = entry.split('=') as [string, string];
      catalog.route(topic, name);
    }
  } catch (err) {
    await model.dispose();
    await canary?.dispose();
    await disposeExtras(extras);
    throw err;
  }

  const chosen = batchSize;
  let disposed: Promise<void> | null = null;
  return {
    model,
    canary,
    extras,
    catalog,
    rollout,
    batchSize,
    modelDir,
    prepareVersion: (dir) => prepareVersion(config, dir, chosen, log),
    dispose() {
      disposed ??= (async () => {
        await model.dispose();
        if (rollout?.state !== 'promoted') await canary?.dispose();
        await disposeExtras(extras);
      })();
      return disposed;
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

export interface Extras {
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

/**
 * Fails the start, naming the field, when a field mapping cannot feed or read a model version its
 * topic can reach: the topic's model by policy, and for model.name also its canary and pinned
 * versions. A version hot-swapped in later is checked when its first request comes (MODEL_INVALID).
 */
export function checkMappings(
  codecs: TopicCodecs,
  serving: Serving,
  config: StreamscoreConfig,
): void {
  for (const mapping of codecs.mappings) {
    const { runner } = serving.catalog.resolve(mapping.topic, mapping.model, null);
    const reachable = [runner.info];
    if (runner.info.name === config.model.name) {
      reachable.push(...serving.extras.versions.map((v) => v.info));
      if (serving.canary) reachable.push(serving.canary.info);
    }
    for (const info of reachable) mapping.check(info);
  }
}

/**
 * The codecs and the models, as the service and the local pipeline start them: codecs first
 * (schema files, mappings and the registry fail before models load), then the models, then the
 * mappings checked against every version they can reach (the models are freed if that fails).
 */
export async function startScoring(
  config: StreamscoreConfig,
  { log }: StartServingOptions,
): Promise<{ codecs: TopicCodecs; serving: Serving }> {
  const codecs = await TopicCodecs.create(config, { log });
  const serving = await startServing(config, { log });
  try {
    checkMappings(codecs, serving, config);
  } catch (err) {
    await serving.dispose();
    throw err;
  }
  return { codecs, serving };
}
