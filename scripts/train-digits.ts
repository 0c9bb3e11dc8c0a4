/**
 * Train the digits classifier shipped in models/digits/1 and write its model card.
 *
 *   npx tsx scripts/train-digits.ts [--backend wasm|cpu|auto] [--out models/digits/1] [--epochs 40]
 *
 * A dense 64 → 64 (relu) → 10 (softmax) network on data/digits/digits.csv (pixel / 16), trained
 * with Adam on the seeded 80% split from src/model/digits-data.ts; the 20% held-out split is
 * never seen in training. Initialisers and batch order are seeded, so a rerun on the same backend
 * writes the same weights.bin. The script then loads what it wrote through the project's loader
 * (checksums, shape checks) and checks the runner reproduces the accuracy put in the card.
 */
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import type { SymbolicTensor, Tensor } from '@tensorflow/tfjs';
import { pino } from 'pino';
import type { BackendPreference } from '../src/model/backend.js';
import { selectBackend } from '../src/model/backend.js';
import type { ModelCard } from '../src/model/card.js';
import { parseModelCard } from '../src/model/card.js';
import type { Sample } from '../src/model/digits-data.js';
import {
  DIGITS_CLASSES,
  DIGITS_PIXELS,
  argmaxRows,
  loadDigitsDataset,
  packPixels,
} from '../src/model/digits-data.js';
import { MODEL_JSON, WEIGHTS_BIN, fileSystemSaver } from '../src/model/fs-io.js';
import { CARD_JSON, loadModel, sha256Hex } from '../src/model/repository.js';
import { fitSeeded } from './lib/fit-seeded.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const SEED = 42;
const HIDDEN_UNITS = 64;
const BATCH_SIZE = 32;
const LEARNING_RATE = 0.005;

const { values: args } = parseArgs({
  options: {
    backend: { type: 'string', default: 'wasm' },
    out: { type: 'string', default: path.join(ROOT, 'models', 'digits', '1') },
    epochs: { type: 'string', default: '40' },
  },
});
const epochs = Number(args.epochs);
const outDir = path.resolve(args.out);
const log = pino({ name: 'train-digits' }, pino.destination(2));

const { tf, backend } = await selectBackend(args.backend as BackendPreference, log);
const { train, heldOut } = loadDigitsDataset();

function accuracy(probabilities: Float32Array, samples: readonly Sample[]): number {
  const predicted = argmaxRows(probabilities, DIGITS_CLASSES);
  return predicted.filter((p, i) => p === samples[i]!.label).length / samples.length;
}

// Layer names are the tensor names of the card: model.inputNames = ['pixels'],
// model.outputNames = ['probabilities'].
const input = tf.input({ shape: [DIGITS_PIXELS], name: 'pixels' });
const hidden = tf.layers
  .dense({
    units: HIDDEN_UNITS,
    activation: 'relu',
    name: 'hidden',
    kernelInitializer: tf.initializers.glorotUniform({ seed: SEED }),
  })
  .apply(input) as SymbolicTensor;
const output = tf.layers
  .dense({
    units: DIGITS_CLASSES,
    activation: 'softmax',
    name: 'probabilities',
    kernelInitializer: tf.initializers.glorotUniform({ seed: SEED + 1 }),
  })
  .apply(hidden) as SymbolicTensor;
const model = tf.model({ inputs: input, outputs: output, name: 'digits' });
model.compile({
  optimizer: tf.train.adam(LEARNING_RATE),
  loss: 'categoricalCrossentropy',
  metrics: ['accuracy'],
});

const xTrain = tf.tensor2d(packPixels(train), [train.length, DIGITS_PIXELS]);
const yTrain = tf.tidy(() =>
  tf.oneHot(
    tf.tensor1d(
      train.map((s) => s.label),
      'int32',
    ),
    DIGITS_CLASSES,
  ),
);
const trainingSeconds = await fitSeeded(tf, model, xTrain, yTrain, {
  epochs,
  batchSize: BATCH_SIZE,
  seed: SEED,
  logEvery: 10,
});
tf.dispose([xTrain, yTrain]);

// Held-out accuracy: the whole split as one batch, argmax in JS — the same computation the
// eval script and tests run through the runner, so the numbers match exactly.
const heldOutAccuracy = tf.tidy(() => {
  const probabilities = model.predict(
    tf.tensor2d(packPixels(heldOut), [heldOut.length, DIGITS_PIXELS]),
  ) as Tensor;
  return accuracy(probabilities.dataSync() as Float32Array, heldOut);
});

await model.save(fileSystemSaver(outDir));
model.dispose();

const files: Record<string, string> = {};
for (const file of [MODEL_JSON, WEIGHTS_BIN])
  files[file] = sha256Hex(await readFile(path.join(outDir, file)));

const card: ModelCard = {
  name: 'digits',
  version: path.basename(outDir),
  description:
    'Hand-written digit classifier: an 8×8 grey-level image in, a probability for each digit 0–9 out. ' +
    'Dense 64 → 64 (relu) → 10 (softmax), ~4.8k parameters. A demo model, not for real use.',
  format: 'tfjs-layers',
  inputs: [
    {
      name: 'pixels',
      dtype: 'float32',
      shape: [DIGITS_PIXELS],
      description: '8×8 image, row-major, each value a pixel count 0..16 divided by 16 (0..1)',
    },
  ],
  outputs: [
    {
      name: 'probabilities',
      dtype: 'float32',
      shape: [DIGITS_CLASSES],
      description: 'softmax over the labels, in label order; sums to 1',
    },
  ],
  labels: Array.from({ length: DIGITS_CLASSES }, (_, i) => String(i)),
  preprocessing:
    'pixel / 16: the UCI 8×8 images hold counts 0..16 (on pixels in 4×4 blocks of a 32×32 bitmap)',
  training: {
    dataset:
      'UCI ML hand-written digits (Optical Recognition of Handwritten Digits), 1,797 8×8 images',
    source:
      'scikit-learn load_digits(), exported by scripts/export-digits.py to data/digits/digits.csv (CC BY 4.0)',
    samples: train.length,
    heldOutSamples: heldOut.length,
    seed: SEED,
    script: 'scripts/train-digits.ts',
    split: 'stratified 80/20, seeded (src/model/digits-data.ts)',
    backend,
    epochs,
    batchSize: BATCH_SIZE,
    optimizer: `adam(${LEARNING_RATE})`,
    loss: 'categoricalCrossentropy',
    trainingSeconds: Math.round(trainingSeconds * 10) / 10,
  },
  metrics: { heldOutAccuracy },
  createdAt: new Date().toISOString(),
  files,
};
parseModelCard(card, CARD_JSON); // fail here, not at load time, if the card does not validate
await writeFile(path.join(outDir, CARD_JSON), JSON.stringify(card, null, 2) + '\n');

// Round trip through the project's loader: checksums, tensor names and shapes, and the runner
// must reproduce the accuracy written in the card.
const runner = await loadModel(outDir, { tf, backend, log });
const out = await runner.predict({ size: heldOut.length, inputs: { pixels: packPixels(heldOut) } });
const reloaded = accuracy(out.probabilities!, heldOut);
await runner.dispose();

console.log(
  `backend ${backend}, ${train.length} training / ${heldOut.length} held-out samples, ${epochs} epochs`,
);
console.log(`training time ${trainingSeconds.toFixed(1)} s`);
console.log(
  `held-out accuracy ${heldOutAccuracy.toFixed(4)} (${Math.round(heldOutAccuracy * heldOut.length)}/${heldOut.length})`,
);
console.log(`wrote ${path.relative(ROOT, outDir)}/{${MODEL_JSON},${WEIGHTS_BIN},${CARD_JSON}}`);
if (reloaded !== heldOutAccuracy) {
  console.error(`reloaded model scores ${reloaded}, the card says ${heldOutAccuracy}`);
  process.exitCode = 1;
}
