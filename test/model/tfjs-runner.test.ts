import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { SelectedBackend } from '../../src/model/backend.js';
import { selectBackend } from '../../src/model/backend.js';
import { DIGITS_PIXELS, loadDigitsDataset, packPixels } from '../../src/model/digits-data.js';
import { fileSystemLoader } from '../../src/model/fs-io.js';
import { loadModel } from '../../src/model/repository.js';
import type { TfjsModelRunner } from '../../src/model/tfjs-runner.js';
import { DIGITS_DIR, recordingLogger } from './helpers.js';
import { rejection } from '../helpers/errors.js';

let selected: SelectedBackend;
let runner: TfjsModelRunner;
const { heldOut } = loadDigitsDataset();

beforeAll(async () => {
  selected = await selectBackend('wasm', recordingLogger());
  runner = await loadModel(DIGITS_DIR, {
    tf: selected.tf,
    backend: selected.backend,
    log: recordingLogger(),
  });
});
afterAll(async () => {
  await runner.dispose();
});

describe('TfjsModelRunner.predict', () => {
  it('equals model.predict on the same tensor, for a batch of 32', async () => {
    const { tf } = selected;
    const model = await tf.loadLayersModel(fileSystemLoader(DIGITS_DIR));
    const pixels = packPixels(heldOut.slice(0, 32));
    const expected = tf.tidy(() => {
      const y = model.predict(tf.tensor2d(pixels, [32, DIGITS_PIXELS])) as ReturnType<
        typeof tf.tensor
      >;
      return y.dataSync() as Float32Array;
    });
    model.dispose();

    const out = await runner.predict({ size: 32, inputs: { pixels } });
    expect(Object.keys(out)).toEqual(['probabilities']);
    expect(out.probabilities).toBeInstanceOf(Float32Array);
    expect(out.probabilities).toHaveLength(32 * 10);
    expect(out.probabilities).toEqual(expected);
  });

  it('returns rows that are probability distributions, one per example', async () => {
    const out = await runner.predict({
      size: 3,
      inputs: { pixels: packPixels(heldOut.slice(0, 3)) },
    });
    for (let r = 0; r < 3; r++) {
      const row = Array.from(out.probabilities!.subarray(r * 10, r * 10 + 10));
      expect(row.reduce((a, b) => a + b, 0)).toBeCloseTo(1, 5);
      expect(row.every((p) => p >= 0)).toBe(true);
    }
  });

  it('gives each example the same answer alone as inside a batch', async () => {
    const batch = await runner.predict({
      size: 4,
      inputs: { pixels: packPixels(heldOut.slice(0, 4)) },
    });
    const alone = await runner.predict({ size: 1, inputs: { pixels: heldOut[2]!.pixels } });
    const inBatch = batch.probabilities!.subarray(20, 30);
    Array.from(alone.probabilities!).forEach((p, i) => expect(p).toBeCloseTo(inBatch[i]!, 6));
  });

  it('throws WRONG_SHAPE when an input length is not size × 64', async () => {
    const err = await rejection(
      runner.predict({ size: 2, inputs: { pixels: new Float32Array(127) } }),
    );
    expect(err.code).toBe('WRONG_SHAPE');
    expect(err.details).toMatchObject({ input: 'pixels', size: 2, length: 127 });
    const tooLong = await rejection(
      runner.predict({ size: 1, inputs: { pixels: new Float32Array(128) } }),
    );
    expect(tooLong.code).toBe('WRONG_SHAPE');
  });

  it('throws WRONG_SHAPE for a batch size that is not a positive integer', async () => {
    for (const size of [0, -1, 1.5]) {
      expect(
        (await rejection(runner.predict({ size, inputs: { pixels: new Float32Array(64) } }))).code,
      ).toBe('WRONG_SHAPE');
    }
  });

  it('throws MISSING_INPUT and UNKNOWN_INPUT for the wrong input names', async () => {
    expect((await rejection(runner.predict({ size: 1, inputs: {} }))).code).toBe('MISSING_INPUT');
    const extra = { pixels: new Float32Array(64), other: new Float32Array(1) };
    expect((await rejection(runner.predict({ size: 1, inputs: extra }))).code).toBe(
      'UNKNOWN_INPUT',
    );
  });

  it('leaks no tensors over 50 predicts, nor when predict fails', async () => {
    const { tf } = selected;
    await runner.predict({ size: 8, inputs: { pixels: packPixels(heldOut.slice(0, 8)) } });
    const before = tf.memory().numTensors;
    for (let i = 0; i < 50; i++) {
      const size = 1 + (i % 16);
      await runner.predict({ size, inputs: { pixels: packPixels(heldOut.slice(i, i + size)) } });
    }
    await rejection(runner.predict({ size: 1, inputs: { pixels: new Float32Array(3) } }));
    expect(tf.memory().numTensors).toBe(before);
  });

  it('warms up at the given batch sizes without leaking', async () => {
    const before = selected.tf.memory().numTensors;
    await runner.warmUp([1, 8, 32]);
    expect(selected.tf.memory().numTensors).toBe(before);
  });
});

describe('TfjsModelRunner failures and disposal', () => {
  it('wraps a model exception as MODEL_FAILED and leaks nothing', async () => {
    const { tf } = selected;
    const own = await loadModel(DIGITS_DIR, {
      tf,
      backend: selected.backend,
      log: recordingLogger(),
    });
    // Break the model underneath the runner: its weights are gone, predict throws inside tfjs.
    (own as unknown as { model: { layers: { dispose(): void }[] } }).model.layers.forEach((l) =>
      l.dispose(),
    );
    const before = tf.memory().numTensors;
    const err = await rejection(own.predict({ size: 1, inputs: { pixels: new Float32Array(64) } }));
    expect(err.code).toBe('MODEL_FAILED');
    expect(err.cause).toBeInstanceOf(Error);
    expect(tf.memory().numTensors).toBe(before);
  });

  it('dispose() frees the weights, is idempotent, and later predicts fail with MODEL_FAILED', async () => {
    const { tf } = selected;
    const before = tf.memory().numTensors;
    const own = await loadModel(DIGITS_DIR, {
      tf,
      backend: selected.backend,
      log: recordingLogger(),
    });
    expect(tf.memory().numTensors).toBe(before + 4); // 2 kernels + 2 biases
    await own.dispose();
    await own.dispose();
    expect(tf.memory().numTensors).toBe(before);
    const err = await rejection(own.predict({ size: 1, inputs: { pixels: new Float32Array(64) } }));
    expect(err.code).toBe('MODEL_FAILED');
  });
});
