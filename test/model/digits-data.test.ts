import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  DIGITS_CLASSES,
  DIGITS_PIXELS,
  argmaxRows,
  digitsCsvPath,
  loadDigitsDataset,
  mulberry32,
  packPixels,
} from '../../src/model/digits-data.js';
import { REPO_ROOT } from './helpers.js';

describe('data/digits/digits.csv', () => {
  const lines = readFileSync(path.join(REPO_ROOT, 'data', 'digits', 'digits.csv'), 'utf8')
    .trimEnd()
    .split('\n');
  const rows = lines.slice(1).map((l) => l.split(',').map(Number));

  it('has a header and 1,797 rows of 65 integer columns', () => {
    expect(lines[0]).toBe([...Array.from({ length: 64 }, (_, i) => `p${i}`), 'label'].join(','));
    expect(rows).toHaveLength(1797);
    for (const row of rows) {
      expect(row).toHaveLength(65);
      expect(row.every((v) => Number.isInteger(v))).toBe(true);
    }
  });

  it('has pixels 0..16 and every label 0..9, ~180 of each', () => {
    expect(Math.min(...rows.flatMap((r) => r.slice(0, 64)))).toBe(0);
    expect(Math.max(...rows.flatMap((r) => r.slice(0, 64)))).toBe(16);
    const counts = new Map<number, number>();
    for (const r of rows) counts.set(r[64]!, (counts.get(r[64]!) ?? 0) + 1);
    expect([...counts.keys()].sort((a, b) => a - b)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    for (const n of counts.values()) expect(n).toBeGreaterThanOrEqual(170);
  });

  it('is the file the loader finds from the module location', () => {
    expect(digitsCsvPath()).toBe(path.join(REPO_ROOT, 'data', 'digits', 'digits.csv'));
  });
});

describe('loadDigitsDataset', () => {
  const { train, heldOut } = loadDigitsDataset();

  it('splits all 1,797 rows into disjoint train and held-out sets, about 80/20', () => {
    expect(train.length + heldOut.length).toBe(1797);
    const ids = new Set([...train, ...heldOut].map((s) => s.id));
    expect(ids.size).toBe(1797);
    expect(heldOut.length).toBeGreaterThan(350);
    expect(heldOut.length).toBeLessThan(370);
  });

  it('is stratified: each class is held out at round(20%)', () => {
    const all = [...train, ...heldOut];
    for (let label = 0; label < DIGITS_CLASSES; label++) {
      const total = all.filter((s) => s.label === label).length;
      expect(heldOut.filter((s) => s.label === label).length).toBe(Math.round(total * 0.2));
    }
  });

  it('is deterministic', () => {
    const again = loadDigitsDataset();
    expect(again.heldOut.map((s) => s.id)).toEqual(heldOut.map((s) => s.id));
    expect(again.heldOut[7]!.pixels).toEqual(heldOut[7]!.pixels);
  });

  it('scales pixels to 0..1 and keeps the CSV row as id', () => {
    const csv = readFileSync(digitsCsvPath(), 'utf8').split('\n');
    const sample = heldOut[3]!;
    const row = Number(sample.id.replace('digits-', ''));
    const cells = csv[row + 1]!.split(',').map(Number);
    expect(Array.from(sample.pixels)).toEqual(cells.slice(0, 64).map((v) => Math.fround(v / 16)));
    expect(sample.label).toBe(cells[64]);
  });
});

describe('helpers', () => {
  it('packPixels lays samples end to end', () => {
    const { heldOut } = loadDigitsDataset();
    const packed = packPixels(heldOut.slice(0, 3));
    expect(packed).toHaveLength(3 * DIGITS_PIXELS);
    expect(packed.subarray(DIGITS_PIXELS, 2 * DIGITS_PIXELS)).toEqual(heldOut[1]!.pixels);
  });

  it('argmaxRows returns the first largest index per row', () => {
    expect(argmaxRows(new Float32Array([0.1, 0.7, 0.2, 0.5, 0.5, 0]), 3)).toEqual([1, 0]);
  });

  it('mulberry32 repeats for a seed and differs across seeds', () => {
    const a = mulberry32(1);
    const b = mulberry32(1);
    const c = mulberry32(2);
    const xs = [a(), a(), a()];
    expect([b(), b(), b()]).toEqual(xs);
    expect(c()).not.toBe(xs[0]);
    expect(xs.every((x) => x >= 0 && x < 1)).toBe(true);
  });
});
