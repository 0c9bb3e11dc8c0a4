/**
 * Held-out accuracy of a digits model, loaded the way the worker loads it (card, checksums,
 * shape checks, TfjsModelRunner), plus an optional quick throughput measurement.
 *
 *   npx tsx scripts/eval-digits.ts [--model models/digits/1] [--backend auto|wasm|cpu|...] [--bench]
 *
 * Exits 1 when the accuracy differs from the card's `metrics.heldOutAccuracy`.
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { pino } from 'pino';
import type { BackendPreference } from '../src/model/backend.js';
import { selectBackend } from '../src/model/backend.js';
import { parseModelCard } from '../src/model/card.js';
import {
  DIGITS_CLASSES,
  DIGITS_PIXELS,
  argmaxRows,
  loadDigitsDataset,
  packPixels,
} from '../src/model/digits-data.js';
import { CARD_JSON, loadModel } from '../src/model/repository.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const { values: args } = parseArgs({
  options: {
    model: { type: 'string', default: path.join(ROOT, 'models', 'digits', '1') },
    backend: { type: 'string', default: 'auto' },
    bench: { type: 'boolean', default: false },
  },
});
const dir = path.resolve(args.model);
const log = pino({ name: 'eval-digits', level: 'warn' }, pino.destination(2));

const { tf, backend, package: pkg } = await selectBackend(args.backend as BackendPreference, log);
const runner = await loadModel(dir, { tf, backend, log });
const { heldOut } = loadDigitsDataset();

const out = await runner.predict({ size: heldOut.length, inputs: { pixels: packPixels(heldOut) } });
const predicted = argmaxRows(out.probabilities!, DIGITS_CLASSES);
const correct = predicted.filter((p, i) => p === heldOut[i]!.label).length;
const accuracy = correct / heldOut.length;
const card = parseModelCard(
  JSON.parse(await readFile(path.join(dir, CARD_JSON), 'utf8')),
  CARD_JSON,
);

const confusion = Array.from({ length: DIGITS_CLASSES }, () =>
  new Array<number>(DIGITS_CLASSES).fill(0),
);
heldOut.forEach((s, i) => confusion[s.label]![predicted[i]!]!++);

console.log(
  `model ${runner.info.name} v${runner.info.version} from ${path.relative(ROOT, dir) || dir}`,
);
console.log(`backend ${backend} (${pkg})`);
console.log(
  `held-out accuracy ${accuracy.toFixed(4)} (${correct}/${heldOut.length}); card says ${card.metrics.heldOutAccuracy.toFixed(4)}`,
);
console.log('confusion (rows: true label, columns: predicted)');
console.log('     ' + confusion.map((_, c) => String(c).padStart(4)).join(''));
confusion.forEach((row, r) =>
  console.log(`  ${r}  ` + row.map((n) => String(n).padStart(4)).join('')),
);

if (args.bench) {
  // Quick figures, not a benchmark suite: single process, warm, inputs from the held-out set.
  for (const size of [1, 32]) {
    const batch = { size, inputs: { pixels: packPixels(heldOut.slice(0, size)) } };
    if (batch.inputs.pixels.length !== size * DIGITS_PIXELS)
      throw new Error('held-out set too small');
    await runner.warmUp([size]);
    for (let i = 0; i < 50; i++) await runner.predict(batch);
    let calls = 0;
    const started = performance.now();
    while (performance.now() - started < 2000) {
      await runner.predict(batch);
      calls++;
    }
    const seconds = (performance.now() - started) / 1000;
    console.log(
      `batch ${String(size).padStart(2)}: ${Math.round(calls / seconds)} predict calls/s, ` +
        `${Math.round((calls * size) / seconds)} examples/s, ${((seconds / calls) * 1e6).toFixed(0)} µs per call`,
    );
  }
}

await runner.dispose();
if (accuracy !== card.metrics.heldOutAccuracy) {
  console.error(`accuracy ${accuracy} differs from the card's ${card.metrics.heldOutAccuracy}`);
  process.exitCode = 1;
}
