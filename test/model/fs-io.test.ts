import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { StreamscoreError } from '../../src/errors.js';
import type { SelectedBackend } from '../../src/model/backend.js';
import { selectBackend } from '../../src/model/backend.js';
import { fileSystemLoader, fileSystemSaver } from '../../src/model/fs-io.js';
import { DIGITS_DIR, recordingLogger, tempDir } from './helpers.js';

let selected: SelectedBackend;
let tmp: Awaited<ReturnType<typeof tempDir>>;

beforeAll(async () => {
  selected = await selectBackend('wasm', recordingLogger());
  tmp = await tempDir('fs-io');
});
afterAll(async () => {
  await tmp.remove();
});

function tinyModel() {
  const { tf } = selected;
  const input = tf.input({ shape: [3], name: 'x' });
  const output = tf.layers
    .dense({ units: 2, name: 'y', kernelInitializer: tf.initializers.glorotUniform({ seed: 7 }) })
    .apply(input) as ReturnType<typeof tf.input>;
  return tf.model({ inputs: input, outputs: output });
}

async function weightsOf(model: { getWeights(): { dataSync(): unknown }[] }): Promise<number[][]> {
  return model.getWeights().map((w) => Array.from(w.dataSync() as Float32Array));
}

describe('fileSystemSaver + fileSystemLoader', () => {
  it('round-trips a layers model: model.json + weights.bin, same weights and names', async () => {
    const { tf } = selected;
    const dir = path.join(tmp.dir, 'tiny');
    const model = tinyModel();
    const result = await model.save(fileSystemSaver(dir));
    expect(result.modelArtifactsInfo.weightDataBytes).toBe((3 * 2 + 2) * 4);

    const json = JSON.parse(await readFile(path.join(dir, 'model.json'), 'utf8'));
    expect(json.format).toBe('layers-model');
    expect(json.weightsManifest).toEqual([
      {
        paths: ['weights.bin'],
        weights: [
          expect.objectContaining({ name: 'y/kernel' }),
          expect.objectContaining({ name: 'y/bias' }),
        ],
      },
    ]);
    expect((await readFile(path.join(dir, 'weights.bin'))).byteLength).toBe(32);

    const loaded = await tf.loadLayersModel(fileSystemLoader(dir));
    expect(loaded.inputNames).toEqual(['x']);
    expect(loaded.outputNames).toEqual(['y']);
    expect(await weightsOf(loaded)).toEqual(await weightsOf(model));
    model.dispose();
    loaded.dispose();
  });

  it('loads weights split over several shards, concatenated in manifest order', async () => {
    const { tf } = selected;
    const dir = path.join(tmp.dir, 'sharded');
    const model = tinyModel();
    await model.save(fileSystemSaver(dir));
    const bin = await readFile(path.join(dir, 'weights.bin'));
    await writeFile(path.join(dir, 'a.bin'), bin.subarray(0, 10));
    await writeFile(path.join(dir, 'b.bin'), bin.subarray(10));
    await writeFile(path.join(dir, 'weights.bin'), new Uint8Array(32)); // must not be read
    const json = JSON.parse(await readFile(path.join(dir, 'model.json'), 'utf8'));
    json.weightsManifest[0].paths = ['a.bin', 'b.bin'];
    await writeFile(path.join(dir, 'model.json'), JSON.stringify(json));

    const loaded = await tf.loadLayersModel(fileSystemLoader(dir));
    expect(await weightsOf(loaded)).toEqual(await weightsOf(model));
    model.dispose();
    loaded.dispose();
  });

  it('reads through the readFile hook when one is given', async () => {
    const { tf } = selected;
    const read: string[] = [];
    const loader = fileSystemLoader('/nonexistent', {
      readFile: async (file) => {
        read.push(file);
        return readFile(path.join(DIGITS_DIR, file));
      },
    });
    const model = await tf.loadLayersModel(loader);
    expect(read).toEqual(['model.json', 'weights.bin']);
    model.dispose();
  });

  it('refuses weight paths that leave the model directory', async () => {
    const dir = path.join(tmp.dir, 'escape');
    const model = tinyModel();
    await model.save(fileSystemSaver(dir));
    model.dispose();
    const json = JSON.parse(await readFile(path.join(dir, 'model.json'), 'utf8'));
    json.weightsManifest[0].paths = ['../tiny/weights.bin'];
    await writeFile(path.join(dir, 'model.json'), JSON.stringify(json));
    const err = await fileSystemLoader(dir).load!().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(StreamscoreError);
    expect((err as StreamscoreError).code).toBe('MODEL_INVALID');
  });

  it('reports a missing model.json as MODEL_NOT_FOUND and broken JSON as MODEL_INVALID', async () => {
    const missing = await fileSystemLoader(path.join(tmp.dir, 'nothing')).load!().catch(
      (e: unknown) => e,
    );
    expect((missing as StreamscoreError).code).toBe('MODEL_NOT_FOUND');
    const dir = path.join(tmp.dir, 'broken');
    const model = tinyModel();
    await model.save(fileSystemSaver(dir));
    model.dispose();
    await writeFile(path.join(dir, 'model.json'), '{"modelTopology":');
    const broken = await fileSystemLoader(dir).load!().catch((e: unknown) => e);
    expect((broken as StreamscoreError).code).toBe('MODEL_INVALID');
  });
});
