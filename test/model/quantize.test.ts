import { cp, readFile, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type * as tfjs from '@tensorflow/tfjs';
import { float16Bits, quantizeUint8, quantizeWeights } from '../../scripts/quantize.js';
import type { SelectedBackend } from '../../src/model/backend.js';
import { selectBackend } from '../../src/model/backend.js';
import { parseModelCard } from '../../src/model/card.js';
import {
  DIGITS_CLASSES,
  argmaxRows,
  loadDigitsDataset,
  packPixels,
} from '../../src/model/digits-data.js';
import { loadModel, resolveModelDir } from '../../src/model/repository.js';
import { rejection } from '../helpers/errors.js';
import { DIGITS_DIR, MODELS_ROOT, recordingLogger, tempDir } from './helpers.js';

/**
 * Bounds on the committed variants against models/digits/1 over the 359 held-out images. Measured
 * with `npm run quantize -- --model digits --version 1`: both agree on 100 % of top-1 labels;
 * max |Δp| 5.2e-4 (float16) and 2.3e-2 (uint8). The bounds leave margin for a retrained source.
 */
const VARIANTS = [
  { name: 'digits-float16', dtype: 'float16', minAgreement: 0.99, maxProbabilityDiff: 5e-3 },
  { name: 'digits-uint8', dtype: 'uint8', minAgreement: 0.97, maxProbabilityDiff: 0.1 },
] as const;

let selected: SelectedBackend;
let tmp: Awaited<ReturnType<typeof tempDir>>;
const log = recordingLogger();
const load = (dir: string) => loadModel(dir, { tf: selected.tf, backend: selected.backend, log });
const { heldOut } = loadDigitsDataset();
const batch = { size: heldOut.length, inputs: { pixels: packPixels(heldOut) } };

async function readCard(dir: string) {
  return parseModelCard(JSON.parse(await readFile(path.join(dir, 'card.json'), 'utf8')), dir);
}

async function readManifest(dir: string): Promise<tfjs.io.WeightsManifestEntry[]> {
  const json = JSON.parse(
    await readFile(path.join(dir, 'model.json'), 'utf8'),
  ) as tfjs.io.ModelJSON;
  return json.weightsManifest.flatMap((g) => g.weights);
}

async function readWeights(dir: string): Promise<ArrayBuffer> {
  const bytes = await readFile(path.join(dir, 'weights.bin'));
  return new Uint8Array(bytes).buffer;
}

let source: { probabilities: Float32Array; predicted: number[]; accuracy: number };

beforeAll(async () => {
  selected = await selectBackend('wasm', recordingLogger());
  tmp = await tempDir('quantize');
  const runner = await load(DIGITS_DIR);
  try {
    const probabilities = (await runner.predict(batch)).probabilities!;
    const predicted = argmaxRows(probabilities, DIGITS_CLASSES);
    const accuracy = predicted.filter((p, i) => p === heldOut[i]!.label).length / heldOut.length;
    source = { probabilities, predicted, accuracy };
  } finally {
    await runner.dispose();
  }
});
afterAll(async () => {
  await tmp.remove();
});

describe.each(VARIANTS)('models/$name', ({ name, dtype, minAgreement, maxProbabilityDiff }) => {
  it('is the only version of its name and loads through the repository loader', async () => {
    const dir = await resolveModelDir(MODELS_ROOT, name, 'latest');
    expect(path.relative(MODELS_ROOT, dir)).toBe(path.join(name, '1'));
    const runner = await load(dir);
    try {
      expect(runner.info).toMatchObject({
        name,
        version: '1',
        inputs: [{ name: 'pixels', dtype: 'float32', shape: [64] }],
        outputs: [{ name: 'probabilities', dtype: 'float32', shape: [10] }],
      });
    } finally {
      await runner.dispose();
    }
  });

  it('is refused when weights.bin does not match the checksum in its card', async () => {
    const copy = path.join(tmp.dir, name, '1');
    await cp(path.join(MODELS_ROOT, name, '1'), copy, { recursive: true });
    const weights = await readFile(path.join(copy, 'weights.bin'));
    weights[0] = weights[0]! ^ 1;
    await writeFile(path.join(copy, 'weights.bin'), weights);
    const err = await rejection(load(copy));
    expect(err).toMatchObject({ code: 'CHECKSUM_MISMATCH', details: { file: 'weights.bin' } });
  });

  it(`stores every weight as ${dtype} in the tfjs manifest, decoding close to float32`, async () => {
    const dir = path.join(MODELS_ROOT, name, '1');
    const [specs, sourceSpecs] = await Promise.all([readManifest(dir), readManifest(DIGITS_DIR)]);
    expect(specs.map((s) => s.name)).toEqual(sourceSpecs.map((s) => s.name));
    for (const spec of specs) {
      expect(spec.dtype).toBe('float32');
      expect(spec.quantization?.dtype).toBe(dtype);
    }
    const { tf } = selected;
    const decoded = tf.io.decodeWeights(await readWeights(dir), specs);
    const original = tf.io.decodeWeights(await readWeights(DIGITS_DIR), sourceSpecs);
    try {
      for (const spec of specs) {
        const got = decoded[spec.name]!.dataSync();
        const want = original[spec.name]!.dataSync();
        // float16: ≤ half an ulp of 10 mantissa bits; uint8: ≤ half a quantisation step.
        const bound = (w: number) =>
          dtype === 'float16'
            ? Math.abs(w) * 2 ** -11 + 2 ** -25
            : spec.quantization!.scale! / 2 + 1e-6;
        want.forEach((w, i) => expect(Math.abs(got[i]! - w)).toBeLessThanOrEqual(bound(w)));
      }
    } finally {
      tf.dispose([...Object.values(decoded), ...Object.values(original)]);
    }
  });

  it('card: sizes are the real weights.bin sizes, source and accuracy are recorded', async () => {
    const dir = path.join(MODELS_ROOT, name, '1');
    const card = await readCard(dir);
    const sourceCard = await readCard(DIGITS_DIR);
    expect(card.quantization).toEqual({
      dtype,
      sourceModel: 'digits',
      sourceVersion: '1',
      weightBytes: (await stat(path.join(dir, 'weights.bin'))).size,
      sourceWeightBytes: (await stat(path.join(DIGITS_DIR, 'weights.bin'))).size,
    });
    expect(card.quantization!.weightBytes * (dtype === 'float16' ? 2 : 4)).toBe(
      card.quantization!.sourceWeightBytes,
    );
    expect(card.metrics.sourceHeldOutAccuracy).toBe(sourceCard.metrics.heldOutAccuracy);
    expect(card.inputs).toEqual(sourceCard.inputs);
    expect(card.outputs).toEqual(sourceCard.outputs);
    expect(card.labels).toEqual(sourceCard.labels);
    expect(card.description).toContain(`of digits version 1`);
  });

  it('reproduces its card accuracy and agrees with the float32 model on the held-out set', async () => {
    const dir = path.join(MODELS_ROOT, name, '1');
    const card = await readCard(dir);
    const runner = await load(dir);
    try {
      const probabilities = (await runner.predict(batch)).probabilities!;
      const predicted = argmaxRows(probabilities, DIGITS_CLASSES);
      const accuracy = predicted.filter((p, i) => p === heldOut[i]!.label).length / heldOut.length;
      expect(Math.abs(accuracy - card.metrics.heldOutAccuracy)).toBeLessThan(1e-9);
      expect(accuracy).toBeGreaterThanOrEqual(source.accuracy - 0.01);

      const agreement =
        predicted.filter((p, i) => p === source.predicted[i]).length / heldOut.length;
      expect(agreement).toBeGreaterThanOrEqual(minAgreement);
      expect(card.metrics.heldOutTop1AgreementWithSource).toBe(agreement);
      let maxDiff = 0;
      probabilities.forEach((p, i) => {
        maxDiff = Math.max(maxDiff, Math.abs(p - source.probabilities[i]!));
      });
      expect(maxDiff).toBeLessThanOrEqual(maxProbabilityDiff);
    } finally {
      await runner.dispose();
    }
  });
});

describe('quantisation helpers (scripts/quantize.ts)', () => {
  it('float16Bits rounds to nearest even and handles the edges', () => {
    expect(float16Bits(0)).toBe(0);
    expect(float16Bits(-0)).toBe(0x8000);
    expect(float16Bits(1)).toBe(0x3c00);
    expect(float16Bits(-2)).toBe(0xc000);
    expect(float16Bits(65504)).toBe(0x7bff);
    expect(float16Bits(65520)).toBe(0x7c00); // rounds up past the largest finite half
    expect(float16Bits(Infinity)).toBe(0x7c00);
    expect(float16Bits(-Infinity)).toBe(0xfc00);
    expect(float16Bits(NaN) & 0x7c00).toBe(0x7c00);
    expect(float16Bits(NaN) & 0x3ff).not.toBe(0);
    expect(float16Bits(1 + 2 ** -11)).toBe(0x3c00); // tie → even
    expect(float16Bits(1 + 3 * 2 ** -11)).toBe(0x3c02); // tie → even (up)
    expect(float16Bits(2 ** -14)).toBe(0x0400); // smallest normal
    expect(float16Bits(2 ** -24)).toBe(0x0001); // smallest subnormal
    expect(float16Bits(2 ** -25)).toBe(0); // tie → even (zero)
    expect(float16Bits(1.5 * 2 ** -25)).toBe(0x0001);
    expect(float16Bits(2 ** -14 - 2 ** -25)).toBe(0x0400); // subnormal rounding carries up
  });

  it('quantizeUint8 keeps zero exact when the range spans it, and handles constants', () => {
    const data = new Float32Array([-1, 0, 0.3, 2]);
    const q = quantizeUint8(data);
    const dequantised = Array.from(q.values, (v) => v * q.scale + q.min);
    expect(dequantised[1]).toBe(0);
    expect(q.values[0]).toBe(0);
    expect(q.values[3]).toBe(255);
    dequantised.forEach((v, i) => expect(Math.abs(v - data[i]!)).toBeLessThanOrEqual(q.scale));

    const positive = quantizeUint8(new Float32Array([5, 6]));
    expect(positive.min).toBe(5);
    expect(Array.from(positive.values)).toEqual([0, 255]);

    const constant = quantizeUint8(new Float32Array([0.25, 0.25]));
    expect(constant).toEqual({ values: new Uint8Array([0, 0]), min: 0.25, scale: 1 });
  });

  it('quantizeWeights refuses weights that are not plain float32', () => {
    const data = new Float32Array([1, 2]).buffer;
    expect(() =>
      quantizeWeights([{ name: 'w', shape: [2], dtype: 'int32' }], data, 'uint8'),
    ).toThrow(/only unquantised float32/);
    expect(() =>
      quantizeWeights([{ name: 'w', shape: [3], dtype: 'float32' }], data, 'float16'),
    ).toThrow(/past the end/);
  });
});
