/**
 * The three benchmark models, built with @tensorflow/tfjs layers from seeded initialisers (the
 * weights are random: the benchmark is about speed, not accuracy) and saved as an ordinary model
 * repository under `.cache/bench/models/<name>/1/` (model.json + weights.bin + card.json with a
 * sha256 of each file), so the worker loads them with its normal loader and checks.
 *
 * A model is only built when its card is missing, lists a file that is missing, or was written
 * by another definition (the card keeps a digest of the definition in `training.definition`).
 */
import { existsSync } from 'node:fs';
import { readFile, rename, rm, writeFile } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type * as tfjs from '@tensorflow/tfjs';
import type { ModelCard } from '../src/model/card.js';
import { parseModelCard } from '../src/model/card.js';
import { MODEL_JSON, WEIGHTS_BIN, fileSystemSaver } from '../src/model/fs-io.js';
import { CARD_JSON, sha256Hex } from '../src/model/repository.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const BENCH_REPOSITORY = path.join(ROOT, '.cache', 'bench', 'models');
export const BENCH_VERSION = '1';
const SEED = 1234;

export type BenchModelName = 'tabular' | 'mlp' | 'cnn';
export const BENCH_MODEL_NAMES: readonly BenchModelName[] = ['tabular', 'mlp', 'cnn'];

export interface BenchModelSpec {
  name: BenchModelName;
  /** One line for tables and the chart. */
  title: string;
  /** Shape of one example of input `x` (no batch dimension). */
  inputShape: number[];
  outputShape: number[];
  labels?: string[];
  /**
   * Requests pre-produced for the throughput phases at `--requests 1`: enough that streamscore
   * runs for several seconds on one wasm core (see bench/README.md).
   */
  defaultRequests: number;
  build(tf: typeof tfjs): tfjs.LayersModel;
}

const DIGIT_LABELS = Array.from({ length: 10 }, (_, i) => String(i));

function glorot(tf: typeof tfjs, offset: number) {
  return tf.initializers.glorotUniform({ seed: SEED + offset });
}

export const BENCH_MODELS: Record<BenchModelName, BenchModelSpec> = {
  tabular: {
    name: 'tabular',
    title: 'tabular 32→64→32→1',
    inputShape: [32],
    outputShape: [1],
    defaultRequests: 200_000,
    build(tf) {
      // Layer names are the card's tensor names: inputNames = ['x'], outputNames = ['y'].
      const x = tf.input({ shape: [32], name: 'x' });
      let h = tf.layers
        .dense({ units: 64, activation: 'relu', name: 'dense1', kernelInitializer: glorot(tf, 1) })
        .apply(x) as tfjs.SymbolicTensor;
      h = tf.layers
        .dense({ units: 32, activation: 'relu', name: 'dense2', kernelInitializer: glorot(tf, 2) })
        .apply(h) as tfjs.SymbolicTensor;
      const y = tf.layers
        .dense({ units: 1, activation: 'sigmoid', name: 'y', kernelInitializer: glorot(tf, 3) })
        .apply(h) as tfjs.SymbolicTensor;
      return tf.model({ inputs: x, outputs: y, name: 'tabular' });
    },
  },
  mlp: {
    name: 'mlp',
    title: 'MLP 784→512→512→10',
    inputShape: [784],
    outputShape: [10],
    labels: DIGIT_LABELS,
    defaultRequests: 60_000,
    build(tf) {
      const x = tf.input({ shape: [784], name: 'x' });
      let h = tf.layers
        .dense({
          units: 512,
          activation: 'relu',
          name: 'dense1',
          kernelInitializer: glorot(tf, 11),
        })
        .apply(x) as tfjs.SymbolicTensor;
      h = tf.layers
        .dense({
          units: 512,
          activation: 'relu',
          name: 'dense2',
          kernelInitializer: glorot(tf, 12),
        })
        .apply(h) as tfjs.SymbolicTensor;
      const y = tf.layers
        .dense({ units: 10, activation: 'softmax', name: 'y', kernelInitializer: glorot(tf, 13) })
        .apply(h) as tfjs.SymbolicTensor;
      return tf.model({ inputs: x, outputs: y, name: 'mlp' });
    },
  },
  cnn: {
    name: 'cnn',
    title: 'CNN 28×28×1',
    inputShape: [28, 28, 1],
    outputShape: [10],
    labels: DIGIT_LABELS,
    defaultRequests: 32_000,
    build(tf) {
      const x = tf.input({ shape: [28, 28, 1], name: 'x' });
      let h = tf.layers
        .conv2d({
          filters: 16,
          kernelSize: 3,
          activation: 'relu',
          name: 'conv1',
          kernelInitializer: glorot(tf, 21),
        })
        .apply(x) as tfjs.SymbolicTensor;
      h = tf.layers.maxPooling2d({ poolSize: 2, name: 'pool1' }).apply(h) as tfjs.SymbolicTensor;
      h = tf.layers
        .conv2d({
          filters: 32,
          kernelSize: 3,
          activation: 'relu',
          name: 'conv2',
          kernelInitializer: glorot(tf, 22),
        })
        .apply(h) as tfjs.SymbolicTensor;
      h = tf.layers.maxPooling2d({ poolSize: 2, name: 'pool2' }).apply(h) as tfjs.SymbolicTensor;
      h = tf.layers.flatten({ name: 'flatten' }).apply(h) as tfjs.SymbolicTensor;
      h = tf.layers
        .dense({ units: 64, activation: 'relu', name: 'dense1', kernelInitializer: glorot(tf, 23) })
        .apply(h) as tfjs.SymbolicTensor;
      const y = tf.layers
        .dense({ units: 10, activation: 'softmax', name: 'y', kernelInitializer: glorot(tf, 24) })
        .apply(h) as tfjs.SymbolicTensor;
      return tf.model({ inputs: x, outputs: y, name: 'cnn' });
    },
  },
};

/** Values in one example of input `x`. */
export function exampleSize(spec: BenchModelSpec): number {
  return spec.inputShape.reduce((n, d) => n * d, 1);
}

/** Digest of what decides the saved files: the layer definition and the seed. */
function definitionDigest(spec: BenchModelSpec): string {
  return createHash('sha256')
    .update(`${SEED}\n${spec.build.toString()}`)
    .digest('hex')
    .slice(0, 16);
}

export function benchModelDir(name: BenchModelName): string {
  return path.join(BENCH_REPOSITORY, name, BENCH_VERSION);
}

/** True when the saved model is complete and was written by the current definition. */
async function isCurrent(dir: string, spec: BenchModelSpec): Promise<boolean> {
  let card: ModelCard;
  try {
    card = parseModelCard(JSON.parse(await readFile(path.join(dir, CARD_JSON), 'utf8')), dir);
  } catch {
    return false; // missing or unreadable: build it again
  }
  return (
    card.training['definition'] === definitionDigest(spec) &&
    Object.keys(card.files).every((file) => existsSync(path.join(dir, file)))
  );
}

/**
 * Makes sure `.cache/bench/models/<name>/1/` holds each named model; builds (on the active tfjs
 * backend) only what is missing or stale. Returns the names that were built.
 */
export async function ensureBenchModels(
  tf: typeof tfjs,
  names: readonly BenchModelName[],
): Promise<BenchModelName[]> {
  const built: BenchModelName[] = [];
  for (const name of names) {
    const spec = BENCH_MODELS[name];
    const dir = benchModelDir(name);
    if (await isCurrent(dir, spec)) continue;
    await saveModel(tf, spec, dir);
    built.push(name);
  }
  return built;
}

async function saveModel(tf: typeof tfjs, spec: BenchModelSpec, dir: string): Promise<void> {
  // Written next to the version directory and renamed into place, so an interrupted run never
  // leaves a half-written version the loader would pick up. The staging name is not numeric, so
  // resolveModelDir ignores it.
  const staging = path.join(path.dirname(dir), `.staging-${process.pid}`);
  await rm(staging, { recursive: true, force: true });
  const model = spec.build(tf);
  try {
    await model.save(fileSystemSaver(staging));
  } finally {
    model.dispose();
  }
  const files: Record<string, string> = {};
  for (const file of [MODEL_JSON, WEIGHTS_BIN])
    files[file] = sha256Hex(await readFile(path.join(staging, file)));

  const card: ModelCard = {
    name: spec.name,
    version: BENCH_VERSION,
    description: `Benchmark model, ${spec.title}, with random (seeded) weights: its outputs mean nothing.`,
    format: 'tfjs-layers',
    inputs: [
      {
        name: 'x',
        dtype: 'float32',
        shape: spec.inputShape,
        description: 'any finite values (the benchmark sends uniform random numbers in 0..1)',
      },
    ],
    outputs: [{ name: 'y', dtype: 'float32', shape: spec.outputShape }],
    ...(spec.labels ? { labels: spec.labels } : {}),
    preprocessing: 'none',
    training: {
      dataset: 'none: untrained, seeded glorot-uniform initialisers',
      source: 'bench/models.ts',
      samples: 0,
      heldOutSamples: 0,
      seed: SEED,
      script: 'bench/models.ts',
      definition: definitionDigest(spec),
    },
    metrics: { heldOutAccuracy: 0 },
    createdAt: new Date().toISOString(),
    files,
  };
  parseModelCard(card, CARD_JSON); // fail here rather than when the worker loads it
  await writeFile(path.join(staging, CARD_JSON), JSON.stringify(card, null, 2) + '\n');
  await rm(dir, { recursive: true, force: true });
  await rename(staging, dir);
}
