/**
 * The UCI hand-written digits committed at data/digits/digits.csv (see data/digits/README.md),
 * split the same way every time: a seeded, stratified 80/20 train / held-out split. The training
 * script learns from `train`; the eval script, the demo and the tests send `heldOut`.
 */
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export interface Sample {
  /** Stable id: `digits-<row>`, the 0-based data row in digits.csv. */
  id: string;
  /** 64 values, row-major 8×8, already scaled to 0..1 (pixel / 16). */
  pixels: Float32Array;
  /** 0..9 */
  label: number;
}

export interface DigitsDataset {
  train: Sample[];
  heldOut: Sample[];
}

export const DIGITS_PIXELS = 64;
export const DIGITS_CLASSES = 10;
/** Raw pixel values are counts 0..16 (4×4 blocks of a 32×32 bitmap); the model sees pixel / 16. */
export const DIGITS_PIXEL_MAX = 16;
export const DIGITS_SPLIT_SEED = 20240611;
export const DIGITS_HELD_OUT_FRACTION = 0.2;
const CSV_RELATIVE = path.join('data', 'digits', 'digits.csv');

/**
 * mulberry32: a tiny seeded PRNG (uniform in [0, 1)). Not for cryptography; here only so splits
 * and shuffles are identical on every machine, which Math.random cannot promise.
 */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Fisher–Yates, in place, driven by `random`. */
export function shuffleInPlace<T>(items: T[], random: () => number): T[] {
  for (let i = items.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [items[i], items[j]] = [items[j]!, items[i]!];
  }
  return items;
}

/**
 * data/digits/digits.csv, found by walking up from this module: the same code runs from src/
 * under tsx and from dist/src/ after a build.
 */
export function digitsCsvPath(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const candidate = path.join(dir, CSV_RELATIVE);
    if (existsSync(candidate)) return candidate;
    const parent = path.dirname(dir);
    if (parent === dir)
      throw new Error(`cannot find ${CSV_RELATIVE} above ${fileURLToPath(import.meta.url)}`);
    dir = parent;
  }
}

/** Every row of the CSV, in file order, pixels scaled. Throws on any malformed row. */
export function readDigitsCsv(csvPath: string = digitsCsvPath()): Sample[] {
  const lines = readFileSync(csvPath, 'utf8').split('\n');
  const header = lines[0]?.split(',') ?? [];
  if (header.length !== DIGITS_PIXELS + 1 || header[DIGITS_PIXELS] !== 'label') {
    throw new Error(
      `${csvPath}: expected ${DIGITS_PIXELS} pixel columns and "label", got ${header.length} columns`,
    );
  }
  const samples: Sample[] = [];
  for (let i = 1; i < lines.length; i++) {
    const line = lines[i]!;
    if (line === '') continue;
    const cells = line.split(',');
    if (cells.length !== DIGITS_PIXELS + 1)
      throw new Error(`${csvPath}:${i + 1}: ${cells.length} columns`);
    const values = cells.map(Number);
    const pixels = new Float32Array(DIGITS_PIXELS);
    for (let p = 0; p < DIGITS_PIXELS; p++) {
      const v = values[p]!;
      if (!Number.isInteger(v) || v < 0 || v > DIGITS_PIXEL_MAX) {
        throw new Error(
          `${csvPath}:${i + 1}: pixel ${p} is ${cells[p]}, not an integer 0..${DIGITS_PIXEL_MAX}`,
        );
      }
      pixels[p] = v / DIGITS_PIXEL_MAX;
    }
    const label = values[DIGITS_PIXELS]!;
    if (!Number.isInteger(label) || label < 0 || label >= DIGITS_CLASSES) {
      throw new Error(
        `${csvPath}:${i + 1}: label ${cells[DIGITS_PIXELS]} is not 0..${DIGITS_CLASSES - 1}`,
      );
    }
    samples.push({ id: `digits-${samples.length}`, pixels, label });
  }
  return samples;
}

/**
 * Seeded stratified split: within each class (in class order, one PRNG for all), shuffle the
 * rows and hold out round(20%) of them. Both halves come back in file order. Fresh arrays on
 * every call, so callers may mutate them.
 */
export function loadDigitsDataset(): DigitsDataset {
  const all = readDigitsCsv();
  const random = mulberry32(DIGITS_SPLIT_SEED);
  const heldOutIds = new Set<string>();
  for (let label = 0; label < DIGITS_CLASSES; label++) {
    const ofClass = shuffleInPlace(
      all.filter((s) => s.label === label),
      random,
    );
    const count = Math.round(ofClass.length * DIGITS_HELD_OUT_FRACTION);
    for (const s of ofClass.slice(0, count)) heldOutIds.add(s.id);
  }
  return {
    train: all.filter((s) => !heldOutIds.has(s.id)),
    heldOut: all.filter((s) => heldOutIds.has(s.id)),
  };
}

/** Pixels of `samples` laid end to end: the `pixels` input of a PackedBatch. */
export function packPixels(samples: readonly Sample[]): Float32Array {
  const out = new Float32Array(samples.length * DIGITS_PIXELS);
  samples.forEach((s, i) => out.set(s.pixels, i * DIGITS_PIXELS));
  return out;
}

/** Index of the largest value in each row of `values` (rows of `width`). */
export function argmaxRows(values: Float32Array, width: number): number[] {
  const rows = values.length / width;
  const out: number[] = new Array<number>(rows);
  for (let r = 0; r < rows; r++) {
    let best = 0;
    for (let c = 1; c < width; c++)
      if (values[r * width + c]! > values[r * width + best]!) best = c;
    out[r] = best;
  }
  return out;
}
