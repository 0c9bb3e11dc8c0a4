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
  /**
   * About the untraced worker's rate on the project's 2-core machine (requests/s): sizes the
   * topics of `--tracing-only`, which skips the phases that measure it.
   */
  typicalRps: number;
  build(tf: typeof tfjs): tfjs.LayersModel;
}

const DIGIT_LABELS = Array.from({ length: 10 }, (_, i) => String(i));

function glorot(tf: typeof tfjs, offset: number) {
  return tf.initializers.glorotUniform({ seed: SEED + offset });
}

type Activation = 'relu' | 'sigmoid' | 'softmax';

function dense(tf: typeof tfjs, units: number, activation: Activation, name: string, seed: number) {
  return tf.layers.dense({ units, activation, name, kernelInitializer: glorot(tf, seed) });
}

function conv(tf: typeof tfjs, filters: number, name: string, seed: number) {
  return tf.layers.conv2d({
    filters,
    kernelSize: 3,
    activation: 'relu',
    name,
    kernelInitializer: glorot(tf, seed),
  });
}

/**
 * A functional model from input `x` through `layers` in order. Layer names are the card's tensor
 * names: inputNames = ['x'], and the last layer is named 'y'.
 */
function chain(
  tf: typeof tfjs,
  name: string,
  shape: number[],
  layers: tfjs.layers.Layer[],
): tfjs.LayersModel {
  const x = tf.input({ shape, name: 'x' });
  const y = layers.reduce<tfjs.SymbolicTensor>(
    (h, layer) => layer.apply(h) as tfjs.SymbolicTensor,
    x,
  );
  return tf.model({ inputs: x, outputs: y, name });
}

export const BENCH_MODELS: Record<BenchModelName, BenchModelSpec> = {
  tabular: {
    name: 'tabular',
    title: 'tabular 32→64→32→1',
    inputShape: [32],
    outputShape: [1],
    defaultRequests: 200_000,
    typicalRps: 35_000,
    build: (tf) =>
      chain(
        tf,
        'tabular',
        [32],
        [
          dense(tf, 64, 'relu', 'dense1', 1),
          dense(tf, 32, 'relu', 'dense2', 2),
          dense(tf, 1, 'sigmoid', 'y', 3),
        ],
      ),
  },
  mlp: {
    name: 'mlp',
    title: 'MLP 784→512→512→10',
    inputShape: [784],
    outputShape: [10],
    labels: DIGIT_LABELS,
    defaultRequests: 60_000,
    typicalRps: 9_000,
    build: (tf) =>
      chain(
        tf,
        'mlp',
        [784],
        [
          dense(tf, 512, 'relu', 'dense1', 11),
          dense(tf, 512, 'relu', 'dense2', 12),
          dense(tf, 10, 'softmax', 'y', 13),
        ],
      ),
  },
  cnn: {
    name: 'cnn',
    title: 'CNN 28×28×1',
    inputShape: [28, 28, 1],
    outputShape: [10],
    labels: DIGIT_LABELS,
    defaultRequests: 32_000,
    typicalRps: 9_000,
    build: (tf) =>
      chain(
        tf,
        'cnn',
        [28, 28, 1],
        [
          conv(tf, 16, 'conv1', 21),
          tf.layers.maxPooling2d({ poolSize: 2, name: 'pool1' }),
          conv(tf, 32, 'conv2', 22),
          tf.layers.maxPooling2d({ poolSize: 2, name: 'pool2' }),
          tf.layers.flatten({ name: 'flatten' }),
          dense(tf, 64, 'relu', 'dense1', 23),
          dense(tf, 10, 'softmax', 'y', 24),
        ],
      ),
  },
};

/** Values in one example of input `x`. */
export function exampleSize(spec: BenchModelSpec): number {
  return spec.inputShape.reduce((n, d) => n * d, 1);
}

/** Digest of what decides the saved files: the layer definition and the seed. */
function definitionDigest(spec: BenchModelSpec): string {
  return createHash('sha256')
    .update(`${SEED}\n${spec.build.toString()}\n${[glorot, dense, conv, chain].join('\n')}`)
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
