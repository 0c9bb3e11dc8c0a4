import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { SelectedBackend } from '../../src/model/backend.js';
import { selectBackend } from '../../src/model/backend.js';
import type { ModelCard } from '../../src/model/card.js';
import { parseModelCard } from '../../src/model/card.js';
import {
  DIGITS_CLASSES,
  argmaxRows,
  loadDigitsDataset,
  packPixels,
} from '../../src/model/digits-data.js';
import { loadModel, resolveModelDir } from '../../src/model/repository.js';
import { DIGITS_DIR, MODELS_ROOT, copyDigitsModel, recordingLogger, tempDir } from './helpers.js';
import { rejection } from '../helpers/errors.js';

let selected: SelectedBackend;
let tmp: Awaited<ReturnType<typeof tempDir>>;
const log = recordingLogger();
const load = (dir: string) => loadModel(dir, { tf: selected.tf, backend: selected.backend, log });

async function readCard(dir: string): Promise<ModelCard> {
  return parseModelCard(JSON.parse(await readFile(path.join(dir, 'card.json'), 'utf8')), dir);
}

beforeAll(async () => {
  selected = await selectBackend('wasm', recordingLogger());
  tmp = await tempDir('repository');
});
afterAll(async () => {
  await tmp.remove();
});

describe('loadModel(models/digits/1)', () => {
  it('loads the committed model and reproduces the held-out accuracy in its card', async () => {
    const card = await readCard(DIGITS_DIR);
    const runner = await load(DIGITS_DIR);
    try {
      expect(runner.info).toMatchObject({
        name: 'digits',
        version: '1',
        backend: 'wasm',
        inputs: [{ name: 'pixels', dtype: 'float32', shape: [64] }],
        outputs: [{ name: 'probabilities', dtype: 'float32', shape: [10] }],
        labels: ['0', '1', '2', '3', '4', '5', '6', '7', '8', '9'],
      });
      const { heldOut } = loadDigitsDataset();
      expect(card.training.heldOutSamples).toBe(heldOut.length);
      const out = await runner.predict({
        size: heldOut.length,
        inputs: { pixels: packPixels(heldOut) },
      });
      const predicted = argmaxRows(out.probabilities!, DIGITS_CLASSES);
      const accuracy = predicted.filter((p, i) => p === heldOut[i]!.label).length / heldOut.length;
      expect(Math.abs(accuracy - card.metrics.heldOutAccuracy)).toBeLessThan(1e-9);
      expect(accuracy).toBeGreaterThan(0.95);
    } finally {
      await runner.dispose();
    }
  });

  it('logs one "model loaded" line with model and version fields', async () => {
    const records = recordingLogger();
    const runner = await loadModel(DIGITS_DIR, {
      tf: selected.tf,
      backend: selected.backend,
      log: records,
    });
    await runner.dispose();
    expect(records.records.filter((r) => r.msg === 'model loaded').map((r) => r.obj)).toEqual([
      expect.objectContaining({ model: 'digits', version: '1', backend: 'wasm' }),
    ]);
  });
});

describe('loadModel refuses', () => {
  it('a weight file with one byte flipped: CHECKSUM_MISMATCH naming the file', async () => {
    const dir = await copyDigitsModel(path.join(tmp.dir, 'corrupt'));
    const weights = path.join(dir, 'weights.bin');
    const bytes = await readFile(weights);
    bytes[100] = bytes[100]! ^ 0x01;
    await writeFile(weights, bytes);
    const err = await rejection(load(dir));
    expect(err.code).toBe('CHECKSUM_MISMATCH');
    expect(err.details['file']).toBe('weights.bin');
    expect(err.message).toContain('weights.bin');
  });

  it('an edited model.json: CHECKSUM_MISMATCH naming model.json', async () => {
    const dir = await copyDigitsModel(path.join(tmp.dir, 'edited'));
    const file = path.join(dir, 'model.json');
    await writeFile(file, (await readFile(file, 'utf8')).replace('"units":64', '"units":65'));
    const err = await rejection(load(dir));
    expect(err.code).toBe('CHECKSUM_MISMATCH');
    expect(err.details['file']).toBe('model.json');
  });

  it('a card whose input shape disagrees with the model: MODEL_INVALID naming the tensor', async () => {
    const dir = await copyDigitsModel(path.join(tmp.dir, 'shape'));
    const card = await readCard(dir);
    card.inputs[0]!.shape = [8, 8];
    await writeFile(path.join(dir, 'card.json'), JSON.stringify(card));
    const err = await rejection(load(dir));
    expect(err.code).toBe('MODEL_INVALID');
    expect(err.details['tensor']).toBe('pixels');
    expect(err.message).toContain('"pixels"');
  });

  it('a card whose output name disagrees with the model: MODEL_INVALID', async () => {
    const dir = await copyDigitsModel(path.join(tmp.dir, 'name'));
    const card = await readCard(dir);
    card.outputs[0]!.name = 'scores';
    await writeFile(path.join(dir, 'card.json'), JSON.stringify(card));
    const err = await rejection(load(dir));
    expect(err.code).toBe('MODEL_INVALID');
    expect(err.message).toContain('probabilities');
  });

  it('a card with the wrong number of labels: MODEL_INVALID', async () => {
    const dir = await copyDigitsModel(path.join(tmp.dir, 'labels'));
    const card = await readCard(dir);
    card.labels = ['a', 'b'];
    await writeFile(path.join(dir, 'card.json'), JSON.stringify(card));
    expect((await rejection(load(dir))).code).toBe('MODEL_INVALID');
  });

  it('a card that does not validate: MODEL_INVALID listing the field', async () => {
    const dir = await copyDigitsModel(path.join(tmp.dir, 'badcard'));
    const card = (await readCard(dir)) as unknown as Record<string, unknown>;
    card['format'] = 'onnx';
    await writeFile(path.join(dir, 'card.json'), JSON.stringify(card));
    const err = await rejection(load(dir));
    expect(err.code).toBe('MODEL_INVALID');
    expect(err.message).toContain('format');
  });

  it('a directory without card.json: MODEL_NOT_FOUND', async () => {
    const dir = await copyDigitsModel(path.join(tmp.dir, 'nocard'));
    await rm(path.join(dir, 'card.json'));
    const err = await rejection(load(dir));
    expect(err.code).toBe('MODEL_NOT_FOUND');
    expect(err.details['file']).toBe('card.json');
  });

  it('a directory without model.json: MODEL_NOT_FOUND', async () => {
    const dir = await copyDigitsModel(path.join(tmp.dir, 'nomodel'));
    await rm(path.join(dir, 'model.json'));
    const err = await rejection(load(dir));
    expect(err.code).toBe('MODEL_NOT_FOUND');
    expect(err.details['file']).toBe('model.json');
  });

  it('a weight file model.json names but the card does not list: MODEL_INVALID', async () => {
    const dir = await copyDigitsModel(path.join(tmp.dir, 'unlisted'));
    const card = await readCard(dir);
    delete card.files['weights.bin'];
    await writeFile(path.join(dir, 'card.json'), JSON.stringify(card));
    const err = await rejection(load(dir));
    expect(err.code).toBe('MODEL_INVALID');
    expect(err.details['file']).toBe('weights.bin');
  });

  it('a card listing a file outside the model directory: MODEL_INVALID', async () => {
    const dir = await copyDigitsModel(path.join(tmp.dir, 'escape'));
    const card = await readCard(dir);
    card.files['../../secret'] = 'a'.repeat(64);
    await writeFile(path.join(dir, 'card.json'), JSON.stringify(card));
    expect((await rejection(load(dir))).code).toBe('MODEL_INVALID');
  });
});

describe('resolveModelDir', () => {
  it('finds models/digits at version 1 and as latest', async () => {
    expect(await resolveModelDir(MODELS_ROOT, 'digits', '1')).toBe(DIGITS_DIR);
    expect(await resolveModelDir(MODELS_ROOT, 'digits', 'latest')).toBe(DIGITS_DIR);
  });

  it('takes the highest numeric version for latest, ignoring non-numeric entries', async () => {
    const root = path.join(tmp.dir, 'repo');
    for (const v of ['1', '2', '9', '10', 'staging', '11.bak'])
      await mkdir(path.join(root, 'm', v), { recursive: true });
    await writeFile(path.join(root, 'm', '12'), 'a file, not a version directory');
    expect(await resolveModelDir(root, 'm', 'latest')).toBe(path.join(root, 'm', '10'));
    expect(await resolveModelDir(root, 'm', '9')).toBe(path.join(root, 'm', '9'));
  });

  it('throws MODEL_NOT_FOUND for an unknown model, a missing version, or a path as name', async () => {
    expect((await rejection(resolveModelDir(MODELS_ROOT, 'nope', 'latest'))).code).toBe(
      'MODEL_NOT_FOUND',
    );
    expect((await rejection(resolveModelDir(MODELS_ROOT, 'digits', '7'))).code).toBe(
      'MODEL_NOT_FOUND',
    );
    expect((await rejection(resolveModelDir(MODELS_ROOT, '../models', 'latest'))).code).toBe(
      'MODEL_NOT_FOUND',
    );
    const empty = path.join(tmp.dir, 'empty');
    await mkdir(path.join(empty, 'm'), { recursive: true });
    expect((await rejection(resolveModelDir(empty, 'm', 'latest'))).code).toBe('MODEL_NOT_FOUND');
  });
});
