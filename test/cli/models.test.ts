import { execFile } from 'node:child_process';
import { cp, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  EXIT_CONFIG,
  modelsInspect,
  modelsList,
  modelsVerify,
  type ModelsIo,
} from '../../src/cli/models.js';
import { DIGITS_DIR, REPO_ROOT, copyDigitsModel, tempDir } from '../model/helpers.js';

let tmp: Awaited<ReturnType<typeof tempDir>>;

/** Writers that keep what they are given; `env` is empty so the ambient environment cannot leak in. */
function capture(env: NodeJS.ProcessEnv = {}) {
  const out: string[] = [];
  const err: string[] = [];
  const io: ModelsIo = { stdout: (t) => out.push(t), stderr: (t) => err.push(t), env };
  return { io, stdout: () => out.join(''), stderr: () => err.join('') };
}

/** A repository holding a copy of models/digits/1 at each of `versions`; returns its root. */
async function repository(label: string, versions: string[] = ['1']): Promise<string> {
  const root = path.join(tmp.dir, label);
  await copyDigitsModel(root);
  for (const v of versions.filter((v) => v !== '1'))
    await cp(DIGITS_DIR, path.join(root, 'digits', v), { recursive: true });
  return root;
}

async function flipByte(file: string, at: number): Promise<void> {
  const bytes = await readFile(file);
  bytes[at] = bytes[at]! ^ 0x01;
  await writeFile(file, bytes);
}

beforeAll(async () => {
  tmp = await tempDir('cli-models');
});
afterAll(async () => {
  await tmp.remove();
});

describe('models list', () => {
  it('shows every version in a table, marking the numerically highest as latest', async () => {
    const root = await repository('list', ['1', '2', '10']);
    const c = capture();
    expect(await modelsList({ repository: root }, c.io)).toBe(0);
    const lines = c.stdout().trimEnd().split('\n');
    expect(lines[0]).toBe(`repository: ${root}`);
    expect(lines[1]).toMatch(/^MODEL\s+VERSION\s+INPUTS\s+OUTPUTS\s+CREATED\s+DESCRIPTION$/);
    expect(lines.slice(2).map((l) => l.split(/\s{2,}/).slice(0, 5))).toEqual(
      ['1', '2', '10 (latest)'].map((v) => [
        'digits',
        v,
        'pixels[64]',
        'probabilities[10]',
        '2026-11-24T05:03:49.098Z',
      ]),
    );
    expect(lines[2]).toContain('Hand-written digit classifier');
    expect(c.stderr()).toBe('');
  });

  it('--json: names, versions, latest and the card summary', async () => {
    const root = await repository('list-json');
    const c = capture();
    expect(await modelsList({ repository: root, json: true }, c.io)).toBe(0);
    const listed = JSON.parse(c.stdout());
    expect(listed).toEqual({
      repository: root,
      models: [
        {
          name: 'digits',
          latest: '1',
          versions: [
            {
              version: '1',
              latest: true,
              dir: path.join(root, 'digits', '1'),
              description: expect.stringContaining('Hand-written digit classifier'),
              format: 'tfjs-layers',
              inputs: [{ name: 'pixels', dtype: 'float32', shape: [64] }],
              outputs: [{ name: 'probabilities', dtype: 'float32', shape: [10] }],
              createdAt: '2026-11-24T05:03:49.098Z',
            },
          ],
        },
      ],
    });
  });

  it('takes the repository from STREAMSCORE_MODEL_REPOSITORY and from --config', async () => {
    const root = await repository('list-config');
    const fromEnv = capture({ STREAMSCORE_MODEL_REPOSITORY: root });
    expect(await modelsList({ json: true }, fromEnv.io)).toBe(0);
    expect(JSON.parse(fromEnv.stdout()).repository).toBe(root);

    const file = path.join(tmp.dir, 'streamscore.yaml');
    await writeFile(file, `model:\n  repository: ${JSON.stringify(root)}\n`);
    const fromFile = capture();
    expect(await modelsList({ config: file, json: true }, fromFile.io)).toBe(0);
    expect(JSON.parse(fromFile.stdout()).repository).toBe(root);
  });

  it('exits 78 on a configuration error and 1 when the repository does not exist', async () => {
    const bad = capture({ STREAMSCORE_MODEL_REPOSITRY: 'models' });
    expect(await modelsList({}, bad.io)).toBe(EXIT_CONFIG);
    expect(bad.stderr()).toContain('CONFIG_INVALID');
    expect(bad.stderr()).toContain('STREAMSCORE_MODEL_REPOSITORY');

    const missing = capture();
    expect(await modelsList({ repository: path.join(tmp.dir, 'nope') }, missing.io)).toBe(1);
    expect(missing.stderr()).toContain('MODEL_NOT_FOUND');
  });
});

describe('models inspect', () => {
  it('prints the whole card: tensors, labels, preprocessing, training, metrics, files', async () => {
    const root = await repository('inspect');
    const c = capture();
    expect(await modelsInspect('digits', undefined, { repository: root }, c.io)).toBe(0);
    const text = c.stdout();
    expect(text.split('\n')[0]).toBe(`digits 1 (latest)  ${path.join(root, 'digits', '1')}`);
    expect(text).toMatch(/^description\s+Hand-written digit classifier/m);
    expect(text).toMatch(/^format\s+tfjs-layers$/m);
    expect(text).toMatch(/^created\s+2026-11-24T05:03:49\.098Z$/m);
    expect(text).toMatch(/^inputs\n {2}pixels\s+float32\s+\[64\]\s+8×8 image/m);
    expect(text).toMatch(/^outputs\n {2}probabilities\s+float32\s+\[10\]\s+softmax/m);
    expect(text).toMatch(/^labels\s+0, 1, 2, 3, 4, 5, 6, 7, 8, 9$/m);
    expect(text).toMatch(/^preprocessing\s+pixel \/ 16/m);
    expect(text).toMatch(/^training\n {2}dataset\s+UCI ML hand-written digits/m);
    expect(text).toMatch(/^ {2}heldOutSamples\s+359$/m);
    expect(text).toMatch(/^metrics\n {2}heldOutAccuracy\s+0\.98050139/m);
    expect(text).toMatch(
      /^ {2}weights\.bin\s+19,240 B\s+sha256 dd933d9855aa96c163045791865cce34adc742dfa9849b3dca75c85b549607dc$/m,
    );
    expect(text).toMatch(/^ {2}model\.json\s+1,725 B\s+sha256 [0-9a-f]{64}$/m);
  });

  it('--json: the parsed card, the directory and each file with its size', async () => {
    const root = await repository('inspect-json', ['1', '3']);
    const c = capture();
    expect(await modelsInspect('digits', '1', { repository: root, json: true }, c.io)).toBe(0);
    const shown = JSON.parse(c.stdout());
    const card = JSON.parse(await readFile(path.join(DIGITS_DIR, 'card.json'), 'utf8'));
    expect(shown.card).toEqual(card);
    expect(shown.dir).toBe(path.join(root, 'digits', '1'));
    expect(shown.latest).toBe(false);
    expect(shown.files).toEqual([
      { file: 'model.json', bytes: 1725, sha256: card.files['model.json'] },
      { file: 'weights.bin', bytes: 19240, sha256: card.files['weights.bin'] },
    ]);
  });

  it('exits 1 naming an unknown model or version', async () => {
    const root = await repository('inspect-missing');
    const c = capture();
    expect(await modelsInspect('digits', '7', { repository: root }, c.io)).toBe(1);
    expect(c.stderr()).toMatch(/^streamscore: MODEL_NOT_FOUND: .*no version 7/);
    expect(c.stdout()).toBe('');
  });
});

describe('models verify', () => {
  it('passes on a good copy: one "ok" line per version, exit 0', async () => {
    const root = await repository('verify-good', ['1', '2']);
    const c = capture();
    expect(await modelsVerify(undefined, undefined, { repository: root }, c.io)).toBe(0);
    expect(c.stdout()).toBe('digits 1  ok\ndigits 2  ok\n');
    expect(c.stderr()).toBe('');
  });

  it('fails naming weights.bin after one byte of it is flipped, exit 1', async () => {
    const root = await repository('verify-corrupt', ['1', '2']);
    await flipByte(path.join(root, 'digits', '2', 'weights.bin'), 100);
    const c = capture();
    expect(await modelsVerify(undefined, undefined, { repository: root }, c.io)).toBe(1);
    const lines = c.stdout().trimEnd().split('\n');
    expect(lines).toHaveLength(2);
    expect(lines[0]).toBe('digits 1  ok');
    expect(lines[1]).toMatch(/^digits 2 {2}FAILED: CHECKSUM_MISMATCH: model file weights\.bin /);
    // Only the version asked for:
    const one = capture();
    expect(await modelsVerify('digits', '1', { repository: root }, one.io)).toBe(0);
    expect(one.stdout()).toBe('digits 1  ok\n');
  });

  it("fails naming card.json and the tensor after the card's input shape is edited", async () => {
    const root = await repository('verify-shape');
    const file = path.join(root, 'digits', '1', 'card.json');
    const card = JSON.parse(await readFile(file, 'utf8'));
    card.inputs[0].shape = [8, 8];
    await writeFile(file, JSON.stringify(card, null, 2));
    const c = capture();
    expect(await modelsVerify('digits', undefined, { repository: root }, c.io)).toBe(1);
    expect(c.stdout()).toMatch(
      /^digits 1 {2}FAILED: MODEL_INVALID: input "pixels" of the model in .* has shape \[64\], card\.json says \[8, 8\]\n$/,
    );

    const json = capture();
    expect(await modelsVerify('digits', '1', { repository: root, json: true }, json.io)).toBe(1);
    expect(JSON.parse(json.stdout()).results).toEqual([
      {
        name: 'digits',
        version: '1',
        dir: path.join(root, 'digits', '1'),
        ok: false,
        error: { code: 'MODEL_INVALID', message: expect.stringContaining('card.json says [8, 8]') },
      },
    ]);
  });

  it('exits 78 on a configuration error', async () => {
    const c = capture({ STREAMSCORE_MODEL_BACKEND: 'tpu' });
    expect(await modelsVerify(undefined, undefined, {}, c.io)).toBe(EXIT_CONFIG);
    expect(c.stderr()).toContain('model.backend');
  });

  it('as a process (streamscore models verify): exit 1 on a corrupt copy', async () => {
    const root = await repository('verify-process');
    await flipByte(path.join(root, 'digits', '1', 'weights.bin'), 7);
    const env = Object.fromEntries(
      Object.entries(process.env).filter(([k]) => !k.startsWith('STREAMSCORE_')),
    );
    const run = promisify(execFile)(
      process.execPath,
      ['--import', 'tsx', 'src/cli/main.ts', 'models', 'verify', '--repository', root],
      { cwd: REPO_ROOT, env },
    );
    const failed = await run.then(
      () => undefined,
      (e: { code?: number; stdout?: string }) => e,
    );
    expect(failed?.code).toBe(1);
    expect(failed?.stdout).toMatch(/^digits 1 {2}FAILED: CHECKSUM_MISMATCH: .*weights\.bin/);
  });
});
