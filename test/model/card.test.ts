import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { StreamscoreError } from '../../src/errors.js';
import { parseModelCard } from '../../src/model/card.js';
import { DIGITS_DIR } from './helpers.js';

const committed = JSON.parse(readFileSync(path.join(DIGITS_DIR, 'card.json'), 'utf8')) as Record<
  string,
  unknown
>;

function invalid(card: unknown): StreamscoreError {
  try {
    parseModelCard(card, 'card.json');
  } catch (err) {
    expect(err).toBeInstanceOf(StreamscoreError);
    expect((err as StreamscoreError).code).toBe('MODEL_INVALID');
    return err as StreamscoreError;
  }
  throw new Error('card was accepted');
}

describe('parseModelCard', () => {
  it('accepts the committed digits card', () => {
    const card = parseModelCard(committed, 'card.json');
    expect(card.format).toBe('tfjs-layers');
    expect(Object.keys(card.files).sort()).toEqual(['model.json', 'weights.bin']);
    expect(card.metrics.heldOutAccuracy).toBeGreaterThan(0.95);
  });

  it('names every bad field', () => {
    const err = invalid({ ...committed, format: 'onnx', files: { 'model.json': 'ABC' } });
    const paths = (err.details['issues'] as { path: string }[]).map((i) => i.path);
    expect(paths).toEqual(expect.arrayContaining(['format', 'files.model.json']));
  });

  it('refuses unknown top-level fields, zero dims, empty files and duplicate tensor names', () => {
    invalid({ ...committed, extra: 1 });
    invalid({ ...committed, inputs: [{ name: 'pixels', dtype: 'float32', shape: [0] }] });
    invalid({ ...committed, files: {} });
    const err = invalid({
      ...committed,
      outputs: [{ name: 'pixels', dtype: 'float32', shape: [10] }],
    });
    expect(err.details['tensor']).toBe('pixels');
  });
});
