/**
 * Weight-quantised variants of a float32 model in the repository.
 *
 *   npm run quantize -- --model digits --version 1 [--dtype float16,uint8] [--out-version 1]
 *                       [--repository models] [--backend wasm] [--force]
 *
 * Reads `<repository>/<model>/<version>` (checksums checked against its card) and writes, for each
 * dtype, `<repository>/<model>-<dtype>/<out-version>/` with model.json, weights.bin and card.json.
 * The variants are new model names, not new versions of the source: the worker serves the highest
 * version of a name by default, so a new version would silently change what is served; serving a
 * variant is a config change instead (`model.name: digits-float16`).
 *
 * The files are the standard tfjs weight quantisation that the Python converter writes
 * (`--quantize_float16` / `--quantize_uint8`): each weight in the manifest gets
 * `"quantization": {"dtype": "float16"}` or `{"dtype": "uint8", "min": m, "scale": s}` and
 * weights.bin holds the 2- or 1-byte values; `tf.loadLayersModel` dequantises them to float32 on
 * load (tfjs-core io_utils decodeWeights: float16 through its lookup tables, uint8 as
 * `q * scale + min`). Only the file shrinks; in memory and in compute the model is float32.
 *
 * Each card records the dtype, the source and both weights.bin sizes (`quantization`), and the
 * held-out accuracy on the digits held-out split (src/model/digits-data.ts) measured as
 * scripts/eval-digits.ts does, next to the source's accuracy and the top-1 agreement with it.
 * The variant is then loaded back through the repository loader (checksums, shape checks) and
 * must reproduce the accuracy written in its card.
 */
import { existsSync, realpathSync } from 'node:fs';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import type * as tfjs from '@tensorflow/tfjs';
import { Command, InvalidArgumentError, Option } from 'commander';
import { pino } from 'pino';
import type { BackendPreference } from '../src/model/backend.js';
import { selectBackend } from '../src/model/backend.js';
import type { ModelCard } from '../src/model/card.js';
import { parseModelCard } from '../src/model/card.js';
import {
  DIGITS_CLASSES,
  DIGITS_PIXELS,
  argmaxRows,
  loadDigitsDataset,
  packPixels,
} from '../src/model/digits-data.js';
import { MODEL_JSON, WEIGHTS_BIN, resolveInside } from '../src/model/fs-io.js';
import { CARD_JSON, loadModel, resolveModelDir, sha256Hex } from '../src/model/repository.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

export const QUANTIZATION_DTYPES = ['float16', 'uint8'] as const;
export type QuantizationDtype = (typeof QUANTIZATION_DTYPES)[number];

/** One weight of a tfjs weights manifest (`tf.io.WeightsManifestEntry`). */
type WeightEntry = tfjs.io.WeightsManifestEntry;

const f32 = new Float32Array(1);
const f32Bits = new Uint32Array(f32.buffer);

/**
 * IEEE 754 half-precision bits of `value` (first rounded to float32), rounding to nearest, ties
 * to even; overflow gives ±Infinity, values below half the smallest subnormal give ±0.
 */
export function float16Bits(value: number): number {
  f32[0] = value;
  const x = f32Bits[0]!;
  const sign = (x >>> 16) & 0x8000;
  const exponent = (x >>> 23) & 0xff;
  const mantissa = x & 0x7fffff;
  if (exponent === 0xff) return sign | 0x7c00 | (mantissa === 0 ? 0 : 0x200); // Inf, NaN
  const e = exponent - 127 + 15; // the half-precision biased exponent
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    // Subnormal half: value = q · 2^-24, q = (1.mantissa · 2^23) >> (14 - e).
    if (e < -10) return sign;
    const full = mantissa | 0x800000;
    const shift = 14 - e;
    const rest = full & ((1 << shift) - 1);
    const halfway = 1 << (shift - 1);
    let q = full >>> shift;
    if (rest > halfway || (rest === halfway && (q & 1) === 1)) q++;
    return sign | q;
  }
  let h = sign | (e << 10) | (mantissa >>> 13);
  const rest = mantissa & 0x1fff;
  // A carry out of the mantissa correctly bumps the exponent (up to Infinity at the top).
  if (rest > 0x1000 || (rest === 0x1000 && (h & 1) === 1)) h++;
  return h;
}

export interface Uint8Quantized {
  values: Uint8Array;
  min: number;
  scale: number;
}

/**
 * Affine uint8 quantisation of one tensor, dequantised by tfjs as `q * scale + min`. As in the
 * tfjs converter, when the range spans 0 it is nudged so that 0 is exactly representable (zero
 * biases and relu zeros stay zero); a range that does not span 0 is used as it is (the converter
 * would clamp such a range to start at 0). A constant tensor is all zeros with min = the value.
 */
export function quantizeUint8(data: Float32Array): Uint8Quantized {
  let lo = Infinity;
  let hi = -Infinity;
  for (const v of data) {
    if (!Number.isFinite(v)) throw new Error(`cannot quantise ${v} to uint8`);
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  }
  const values = new Uint8Array(data.length);
  if (data.length === 0) return { values, min: 0, scale: 1 };
  if (lo === hi) return { values, min: lo, scale: 1 };
  const scale = (hi - lo) / 255;
  let min = lo;
  if (lo < 0 && hi > 0) {
    const zeroPoint = Math.round(-lo / scale);
    min = -zeroPoint * scale;
  }
  for (let i = 0; i < data.length; i++) {
    const q = Math.round((data[i]! - min) / scale);
    values[i] = q < 0 ? 0 : q > 255 ? 255 : q;
  }
  return { values, min, scale };
}

/**
 * Quantise the float32 weights `data` (laid out as `specs` describe, unquantised) to `dtype`:
 * the new manifest entries and the bytes of the new weights.bin.
 */
export function quantizeWeights(
  specs: readonly WeightEntry[],
  data: ArrayBuffer,
  dtype: QuantizationDtype,
): { specs: WeightEntry[]; data: Uint8Array } {
  const chunks: Uint8Array[] = [];
  const out: WeightEntry[] = [];
  let offset = 0;
  for (const spec of specs) {
    if (spec.dtype !== 'float32' || spec.quantization !== undefined) {
      throw new Error(
        `weight ${spec.name} is ${spec.quantization ? `already ${spec.quantization.dtype}-quantised` : spec.dtype}; only unquantised float32 weights can be quantised`,
      );
    }
    const size = spec.shape.reduce((n, d) => n * d, 1);
    if (offset + size * 4 > data.byteLength) {
      throw new Error(
        `weight ${spec.name} runs past the end of the weights (${data.byteLength} B)`,
      );
    }
    const values = new Float32Array(data.slice(offset, offset + size * 4));
    offset += size * 4;
    const { quantization: _none, ...rest } = spec;
    if (dtype === 'float16') {
      const halves = new Uint16Array(size);
      for (let i = 0; i < size; i++) halves[i] = float16Bits(values[i]!);
      // Little-endian on every platform tfjs and Node run on, as tfjs reads it (a Uint16Array view).
      chunks.push(new Uint8Array(halves.buffer));
      out.push({ ...rest, quantization: { dtype: 'float16' } });
    } else {
      const q = quantizeUint8(values);
      chunks.push(q.values);
      out.push({ ...rest, quantization: { dtype: 'uint8', min: q.min, scale: q.scale } });
    }
  }
  if (offset !== data.byteLength) {
    throw new Error(
      `the manifest describes ${offset} B of weights, the files hold ${data.byteLength}`,
    );
  }
  const total = chunks.reduce((n, c) => n + c.byteLength, 0);
  const bytes = new Uint8Array(total);
  let at = 0;
  for (const c of chunks) {
    bytes.set(c, at);
    at += c.byteLength;
  }
  return { specs: out, data: bytes };
}

interface Evaluation {
  accuracy: number;
  predicted: number[];
  probabilities: Float32Array;
}

function evaluate(probabilities: Float32Array, labels: readonly number[]): Evaluation {
  const predicted = argmaxRows(probabilities, DIGITS_CLASSES);
  const correct = predicted.filter((p, i) => p === labels[i]).length;
  return { accuracy: correct / labels.length, predicted, probabilities };
}

/** The card's interface must be the digits one: held-out accuracy is measured on that set. */
function checkDigitsInterface(card: ModelCard, dir: string): void {
  const [input] = card.inputs;
  const [output] = card.outputs;
  const ok =
    card.inputs.length === 1 &&
    card.outputs.length === 1 &&
    input!.shape.length === 1 &&
    input!.shape[0] === DIGITS_PIXELS &&
    output!.shape.length === 1 &&
    output!.shape[0] === DIGITS_CLASSES;
  if (!ok) {
    throw new Error(
      `${dir}: held-out accuracy is measured on the digits held-out set, so the model must take ` +
        `one [${DIGITS_PIXELS}] input and give one [${DIGITS_CLASSES}] output`,
    );
  }
}

export interface QuantizeOptions {
  repository: string;
  model: string;
  version: string;
  dtypes: readonly QuantizationDtype[];
  outVersion: string;
  backend: BackendPreference;
  force: boolean;
}

export async function quantize(options: QuantizeOptions): Promise<number> {
  const log = pino({ name: 'quantize', level: 'warn' }, pino.destination(2));
  const { tf, backend } = await selectBackend(options.backend, log);
  const sourceDir = await resolveModelDir(options.repository, options.model, options.version);
  const variantDir = (dtype: QuantizationDtype) =>
    path.join(options.repository, `${options.model}-${dtype}`, options.outVersion);
  const existing = options.dtypes.map(variantDir).filter((dir) => existsSync(dir));
  if (existing.length > 0 && !options.force) {
    throw new Error(`${existing.join(' and ')} exist(s); pass --force to replace`);
  }

  // The source through the loader: checksums, tensor checks, and its accuracy measured now.
  const { heldOut } = loadDigitsDataset();
  const labels = heldOut.map((s) => s.label);
  const batch = { size: heldOut.length, inputs: { pixels: packPixels(heldOut) } };
  const sourceCard = parseModelCard(
    JSON.parse(await readFile(path.join(sourceDir, CARD_JSON), 'utf8')),
    path.join(sourceDir, CARD_JSON),
  );
  const sourceRunner = await loadModel(sourceDir, { tf, backend, log });
  checkDigitsInterface(sourceCard, sourceDir);
  if (sourceCard.quantization !== undefined) {
    throw new Error(`${sourceDir} is itself a ${sourceCard.quantization.dtype} variant`);
  }
  const source = evaluate((await sourceRunner.predict(batch)).probabilities!, labels);
  await sourceRunner.dispose();

  // The same bytes again, checked against the same card.
  const read = async (file: string): Promise<Uint8Array> => {
    const bytes = await readFile(resolveInside(sourceDir, file));
    const expected = sourceCard.files[file];
    if (expected === undefined)
      throw new Error(`${CARD_JSON} in ${sourceDir} does not list ${file}`);
    if (sha256Hex(bytes) !== expected)
      throw new Error(`${file} in ${sourceDir} changed since it was loaded`);
    return bytes;
  };
  const modelJson = JSON.parse(
    new TextDecoder().decode(await read(MODEL_JSON)),
  ) as tfjs.io.ModelJSON;
  const manifest = modelJson.weightsManifest;
  const shards: ArrayBuffer[] = [];
  for (const group of manifest)
    for (const shard of group.paths) {
      const bytes = await read(shard);
      shards.push(
        bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) as ArrayBuffer,
      );
    }
  const sourceWeights = tf.io.concatenateArrayBuffers(shards);
  const sourceSpecs = manifest.flatMap((group) => group.weights);

  console.log(
    `source ${sourceCard.name} v${sourceCard.version} (${path.relative(ROOT, sourceDir) || sourceDir}): ` +
      `${sourceWeights.byteLength} B of float32 weights, held-out accuracy ${source.accuracy.toFixed(4)}, backend ${backend}`,
  );

  let failures = 0;
  for (const dtype of options.dtypes) {
    const name = `${options.model}-${dtype}`;
    const outDir = variantDir(dtype);
    await rm(outDir, { recursive: true, force: true }); // --force checked before any writing
    await mkdir(outDir, { recursive: true });

    const quantized = quantizeWeights(sourceSpecs, sourceWeights, dtype);
    const outJson: tfjs.io.ModelJSON = {
      ...modelJson,
      weightsManifest: [{ paths: [WEIGHTS_BIN], weights: quantized.specs }],
    };
    await writeFile(path.join(outDir, WEIGHTS_BIN), quantized.data);
    await writeFile(path.join(outDir, MODEL_JSON), JSON.stringify(outJson));

    // Accuracy before the card exists: tfjs itself dequantises what was just written.
    const model = await tf.loadLayersModel(
      tf.io.fromMemory({
        modelTopology: outJson.modelTopology,
        weightSpecs: quantized.specs,
        weightData: quantized.data.slice().buffer,
      }),
    );
    const probabilities = tf.tidy(
      () =>
        (
          model.predict(
            tf.tensor2d(batch.inputs.pixels, [heldOut.length, DIGITS_PIXELS]),
          ) as tfjs.Tensor
        ).dataSync() as Float32Array,
    );
    model.dispose();
    const variant = evaluate(probabilities, labels);
    const agreement =
      variant.predicted.filter((p, i) => p === source.predicted[i]).length / heldOut.length;
    let maxDiff = 0;
    for (let i = 0; i < probabilities.length; i++)
      maxDiff = Math.max(maxDiff, Math.abs(probabilities[i]! - source.probabilities[i]!));

    const files: Record<string, string> = {};
    for (const file of [MODEL_JSON, WEIGHTS_BIN])
      files[file] = sha256Hex(await readFile(path.join(outDir, file)));
    const card: ModelCard = {
      ...sourceCard,
      name,
      version: options.outVersion,
      description:
        `${dtype === 'float16' ? 'float16' : 'uint8 (affine, per tensor)'} weight-quantised variant of ` +
        `${sourceCard.name} version ${sourceCard.version}, made by scripts/quantize.ts: weights.bin ` +
        `holds ${dtype} values that tfjs dequantises to float32 on load. ${sourceCard.description}`,
      metrics: {
        heldOutAccuracy: variant.accuracy,
        sourceHeldOutAccuracy: source.accuracy,
        heldOutTop1AgreementWithSource: agreement,
        heldOutMaxAbsProbabilityDiff: maxDiff,
      },
      quantization: {
        dtype,
        sourceModel: sourceCard.name,
        sourceVersion: sourceCard.version,
        weightBytes: quantized.data.byteLength,
        sourceWeightBytes: sourceWeights.byteLength,
      },
      createdAt: new Date().toISOString(),
      files,
    };
    parseModelCard(card, CARD_JSON);
    await writeFile(path.join(outDir, CARD_JSON), JSON.stringify(card, null, 2) + '\n');

    // Round trip through the repository loader, as the worker loads it.
    const runner = await loadModel(outDir, { tf, backend, log });
    const reloaded = evaluate((await runner.predict(batch)).probabilities!, labels);
    await runner.dispose();

    const correct = Math.round(variant.accuracy * heldOut.length);
    console.log(
      `${dtype.padEnd(7)} ${path.relative(ROOT, outDir) || outDir}: ${quantized.data.byteLength} B ` +
        `(${((100 * quantized.data.byteLength) / sourceWeights.byteLength).toFixed(0)} %), held-out accuracy ` +
        `${variant.accuracy.toFixed(4)} (${correct}/${heldOut.length}), top-1 agreement ` +
        `${(100 * agreement).toFixed(2)} %, max |Δp| ${maxDiff.toExponential(2)}`,
    );
    if (reloaded.accuracy !== variant.accuracy) {
      console.error(
        `${outDir}: loaded through the repository it scores ${reloaded.accuracy}, the card says ${variant.accuracy}`,
      );
      failures++;
    }
  }
  return failures === 0 ? 0 : 1;
}

function decimal(value: string): string {
  if (!/^[0-9]+$/.test(value)) throw new InvalidArgumentError('expected a decimal version number');
  return value;
}

function dtypeList(value: string): QuantizationDtype[] {
  const dtypes = value.split(',').map((d) => d.trim());
  for (const d of dtypes) {
    if (!(QUANTIZATION_DTYPES as readonly string[]).includes(d))
      throw new InvalidArgumentError(`"${d}" is not one of ${QUANTIZATION_DTYPES.join(', ')}`);
  }
  return [...new Set(dtypes as QuantizationDtype[])];
}

export function buildProgram(): Command {
  return new Command('quantize')
    .description(
      'write float16 and uint8 weight-quantised variants of a float32 model as <model>-<dtype>/<out-version>',
    )
    .requiredOption('--model <name>', 'source model name in the repository')
    .option('--version <n>', 'source version (a number or "latest")', 'latest')
    .option('--dtype <list>', `comma-separated: ${QUANTIZATION_DTYPES.join(', ')}`, dtypeList, [
      ...QUANTIZATION_DTYPES,
    ])
    .option('--out-version <n>', 'version directory of each variant', decimal, '1')
    .option('--repository <dir>', 'model repository root', path.join(ROOT, 'models'))
    .addOption(
      new Option('--backend <name>', 'tfjs backend for the accuracy measurement')
        .choices(['auto', 'tensorflow-gpu', 'tensorflow', 'wasm', 'cpu'])
        .default('wasm'),
    )
    .option('--force', 'replace variant directories that already exist', false);
}

async function main(argv: string[]): Promise<number> {
  const program = buildProgram();
  program.parse(argv, { from: 'user' });
  const opts = program.opts<{
    model: string;
    version: string;
    dtype: QuantizationDtype[];
    outVersion: string;
    repository: string;
    backend: BackendPreference;
    force: boolean;
  }>();
  return quantize({
    repository: path.resolve(opts.repository),
    model: opts.model,
    version: opts.version,
    dtypes: opts.dtype,
    outVersion: opts.outVersion,
    backend: opts.backend,
    force: opts.force,
  });
}

// Run as a script (not imported by a test): argv[1] is this file.
const invoked = process.argv[1];
if (
  invoked &&
  existsSync(invoked) &&
  import.meta.url === pathToFileURL(realpathSync(invoked)).href
) {
  try {
    process.exitCode = await main(process.argv.slice(2));
  } catch (err) {
    console.error(`quantize: ${err instanceof Error ? err.message : String(err)}`);
    process.exitCode = 1;
  }
}
