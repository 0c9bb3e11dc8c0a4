/**
 * Train the payment fraud classifier shipped in models/fraud/1 and write its model card.
 *
 *   npx tsx scripts/train-fraud.ts [--backend wasm|cpu|auto] [--out models/fraud/1] [--epochs 20]
 *
 * A dense 18 → 32 (relu) → 2 (softmax) network on synthetic payments from
 * src/model/payments-data.ts: 20,000 training payments and 5,000 held-out payments, each from its
 * own seed, so the held-out ones are never seen in training. Numeric fields are standardised with
 * the mean and std of the training payments, which go into the card's `features` with the one-hot
 * vocabularies: the worker's field mapping reads them from there. Initialisers and batch order
 * are seeded, so a rerun on the same backend writes the same weights.bin. The script then loads
 * what it wrote through the project's loader (checksums, shape checks) and checks the runner
 * reproduces the metrics put in the card.
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
import { MODEL_JSON, WEIGHTS_BIN, fileSystemSaver } from '../src/model/fs-io.js';
import type { LabelledPayment } from '../src/model/payments-data.js';
import {
  PAYMENTS_HELD_OUT_SEED,
  PAYMENTS_TRAIN_SEED,
  fitPaymentFeatures,
  fraudMetrics,
  generatePayments,
  hiddenFraudProbability,
  inputWidth,
  packPayments,
} from '../src/model/payments-data.js';
import { CARD_JSON, loadModel, sha256Hex } from '../src/model/repository.js';
import { fitSeeded } from './lib/fit-seeded.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const SEED = 42;
const TRAIN_PAYMENTS = 20_000;
const HELD_OUT_PAYMENTS = 5_000;
const HIDDEN_UNITS = 32;
const BATCH_SIZE = 64;
const LEARNING_RATE = 0.003;
const LABELS = ['legit', 'fraud'];
const INPUT_NAME = 'payment';
const OUTPUT_NAME = 'fraud_probability';

const { values: args } = parseArgs({
  options: {
    backend: { type: 'string', default: 'wasm' },
    out: { type: 'string', default: path.join(ROOT, 'models', 'fraud', '1') },
    epochs: { type: 'string', default: '20' },
  },
});
const epochs = Number(args.epochs);
const outDir = path.resolve(args.out);
const log = pino({ name: 'train-fraud' }, pino.destination(2));

const { tf, backend } = await selectBackend(args.backend as BackendPreference, log);
const train = generatePayments(TRAIN_PAYMENTS, PAYMENTS_TRAIN_SEED);
const heldOut = generatePayments(HELD_OUT_PAYMENTS, PAYMENTS_HELD_OUT_SEED);
const features = fitPaymentFeatures(train.map((s) => s.payment));
const width = inputWidth(features);
const labelsOf = (samples: readonly LabelledPayment[]) => samples.map((s) => s.fraud);
const pack = (samples: readonly LabelledPayment[]) =>
  packPayments(
    samples.map((s) => s.payment),
    features,
  );

// Layer names are the tensor names of the card: model.inputNames = ['payment'],
// model.outputNames = ['fraud_probability'].
const input = tf.input({ shape: [width], name: INPUT_NAME });
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
    units: LABELS.length,
    activation: 'softmax',
    name: OUTPUT_NAME,
    kernelInitializer: tf.initializers.glorotUniform({ seed: SEED + 1 }),
  })
  .apply(hidden) as SymbolicTensor;
const model = tf.model({ inputs: input, outputs: output, name: 'fraud' });
model.compile({
  optimizer: tf.train.adam(LEARNING_RATE),
  loss: 'categoricalCrossentropy',
  metrics: ['accuracy'],
});

const xTrain = tf.tensor2d(pack(train), [train.length, width]);
const yTrain = tf.tidy(() =>
  tf.oneHot(
    tf.tensor1d(
      train.map((s) => (s.fraud ? 1 : 0)),
      'int32',
    ),
    LABELS.length,
  ),
);
const trainingSeconds = await fitSeeded(tf, model, xTrain, yTrain, {
  epochs,
  batchSize: BATCH_SIZE,
  seed: SEED,
  logEvery: 5,
});
tf.dispose([xTrain, yTrain]);

// Held-out metrics: the whole split as one batch — the same computation the test runs through
// the runner, so the numbers match exactly.
const heldOutProbabilities = tf.tidy(() => {
  const probabilities = model.predict(
    tf.tensor2d(pack(heldOut), [heldOut.length, width]),
  ) as Tensor;
  return probabilities.dataSync() as Float32Array;
});
const heldOutMetrics = fraudMetrics(heldOutProbabilities, labelsOf(heldOut), {
  width: LABELS.length,
});
// The best any model could do at 0.5: the hidden rule's own probability.
const ruleMetrics = fraudMetrics(
  heldOut.map((s) => hiddenFraudProbability(s.payment)),
  labelsOf(heldOut),
);
const trainFraudRate = train.filter((s) => s.fraud).length / train.length;

await model.save(fileSystemSaver(outDir));
model.dispose();

const files: Record<string, string> = {};
for (const file of [MODEL_JSON, WEIGHTS_BIN])
  files[file] = sha256Hex(await readFile(path.join(outDir, file)));

const card: ModelCard = {
  name: 'fraud',
  version: path.basename(outDir),
  description:
    'Payment fraud classifier: the fields of a card payment (com.example.payments.Payment, ' +
    'schemas/examples/payment.avsc) in, a probability for legit and fraud out. ' +
    `Dense ${width} → ${HIDDEN_UNITS} (relu) → 2 (softmax). Trained on synthetic payments; ` +
    'a demo of mapping a domain record to a tensor, not for real use.',
  format: 'tfjs-layers',
  inputs: [
    {
      name: INPUT_NAME,
      dtype: 'float32',
      shape: [width],
      description: `one payment as ${width} columns, laid out as in "features"`,
    },
  ],
  outputs: [
    {
      name: OUTPUT_NAME,
      dtype: 'float32',
      shape: [LABELS.length],
      description: 'softmax over the labels [legit, fraud]; the second value is p(fraud)',
    },
  ],
  labels: LABELS,
  features,
  preprocessing:
    'Columns in "features" order. Numeric fields: (x - mean) / std with the mean and std of the ' +
    'training payments (cardPresent as 0 / 1). One-hot fields: 1 in the column of the value in ' +
    'the vocabulary, 0 elsewhere; a value not in it (e.g. another country) is all zeros. ' +
    'paymentId and channel are not used.',
  training: {
    dataset: `synthetic card payments: ${TRAIN_PAYMENTS.toLocaleString('en')} training, ${HELD_OUT_PAYMENTS.toLocaleString('en')} held-out`,
    source:
      'generatePayments(n, seed) in src/model/payments-data.ts; labels from a hidden logistic ' +
      'rule (hiddenFraudProbability) drawn with noise',
    samples: train.length,
    heldOutSamples: heldOut.length,
    seed: SEED,
    trainSeed: PAYMENTS_TRAIN_SEED,
    heldOutSeed: PAYMENTS_HELD_OUT_SEED,
    trainFraudRate,
    script: 'scripts/train-fraud.ts',
    backend,
    epochs,
    batchSize: BATCH_SIZE,
    optimizer: `adam(${LEARNING_RATE})`,
    loss: 'categoricalCrossentropy',
    trainingSeconds: Math.round(trainingSeconds * 10) / 10,
  },
  metrics: {
    heldOutAccuracy: heldOutMetrics.accuracy,
    fraudPrecision: heldOutMetrics.precision,
    fraudRecall: heldOutMetrics.recall,
    threshold: 0.5,
    heldOutFraudRate: heldOutMetrics.fraudRate,
    majorityClassAccuracy: heldOutMetrics.majorityClassAccuracy,
    hiddenRuleAccuracy: ruleMetrics.accuracy,
  },
  createdAt: new Date().toISOString(),
  files,
};
parseModelCard(card, CARD_JSON); // fail here, not at load time, if the card does not validate
await writeFile(path.join(outDir, CARD_JSON), JSON.stringify(card, null, 2) + '\n');

// Round trip through the project's loader: checksums, tensor names and shapes, and the runner
// must reproduce the metrics written in the card.
const runner = await loadModel(outDir, { tf, backend, log });
const out = await runner.predict({ size: heldOut.length, inputs: { [INPUT_NAME]: pack(heldOut) } });
const reloaded = fraudMetrics(out[OUTPUT_NAME]!, labelsOf(heldOut), { width: LABELS.length });
await runner.dispose();

const pct = (x: number) => `${(x * 100).toFixed(1)} %`;
console.log(
  `backend ${backend}, ${train.length} training / ${heldOut.length} held-out payments, ${epochs} epochs`,
);
console.log(`training time ${trainingSeconds.toFixed(1)} s`);
console.log(
  `held-out accuracy ${heldOutMetrics.accuracy.toFixed(4)} (always "legit": ${heldOutMetrics.majorityClassAccuracy.toFixed(4)}, hidden rule: ${ruleMetrics.accuracy.toFixed(4)})`,
);
console.log(
  `fraud at 0.5: precision ${pct(heldOutMetrics.precision)}, recall ${pct(heldOutMetrics.recall)} (hidden rule ${pct(ruleMetrics.precision)} / ${pct(ruleMetrics.recall)}); fraud rate ${pct(heldOutMetrics.fraudRate)} held out, ${pct(trainFraudRate)} in training`,
);
console.log(`wrote ${path.relative(ROOT, outDir)}/{${MODEL_JSON},${WEIGHTS_BIN},${CARD_JSON}}`);
if (JSON.stringify(reloaded) !== JSON.stringify(heldOutMetrics)) {
  console.error(
    `reloaded model scores ${JSON.stringify(reloaded)}, the card says ${JSON.stringify(heldOutMetrics)}`,
  );
  process.exitCode = 1;
}
