/**
 * `streamscore score --local` in-process (runScore): the same worker code scores the file without
 * Kafka. Output order, dead letters, resuming after a partial line, stopping on the first signal.
 */
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { BatchIo } from '../../src/cli/batch-io.js';
import { defaultOutput, runScore, type ScoreFlags } from '../../src/cli/score.js';
import { loadDigitsDataset } from '../../src/model/digits-data.js';
import { tempDir } from '../model/helpers.js';

const TOTAL = 600;
const isBad = (i: number) => i % 200 === 13;
const { heldOut } = loadDigitsDataset();

let dir: string;
let remove: () => Promise<void>;
let input: string;

beforeAll(async () => {
  ({ dir, remove } = await tempDir('score'));
  input = path.join(dir, 'digits.jsonl');
  const lines = Array.from({ length: TOTAL }, (_, i) => {
    const pixels = Array.from(heldOut[i % heldOut.length]!.pixels);
    const data = isBad(i) ? pixels.slice(0, 10) : pixels;
    // Every other record brings its own id; the rest get <file name>:<index>.
    return JSON.stringify({
      ...(i % 2 === 0 ? { id: `own-${i}` } : {}),
      inputs: [{ name: 'pixels', shape: [data.length], data }],
    });
  });
  await writeFile(input, lines.join('\n') + '\n');
});

afterAll(async () => {
  await remove();
});

const expectedId = (i: number) => (i % 2 === 0 ? `own-${i}` : `digits.jsonl:${i}`);

function io(extra: Partial<BatchIo> = {}) {
  const written = { stdout: '', stderr: '' };
  const value: BatchIo = {
    stdout: (text) => (written.stdout += text),
    stderr: (text) => (written.stderr += text),
    isTTY: false,
    env: { STREAMSCORE_MODEL_VERSION: '1', STREAMSCORE_MODEL_REPLICAS: '0' },
    ...extra,
  };
  return { io: value, written };
}

const flags = (out: string): ScoreFlags => ({ local: true, out, logLevel: 'silent' });

async function outputLines(out: string) {
  const text = await readFile(out, 'utf8');
  expect(text.endsWith('\n')).toBe(true);
  return text
    .trimEnd()
    .split('\n')
    .map((l) => JSON.parse(l) as { id: string; label?: string; error?: { code: string } });
}

function checkLines(lines: Awaited<ReturnType<typeof outputLines>>) {
  expect(lines).toHaveLength(TOTAL);
  lines.forEach((line, i) => {
    expect(line.id).toBe(expectedId(i));
    if (isBad(i)) expect(line.error?.code).toBe('WRONG_SHAPE');
    else expect(line.label).toMatch(/^[0-9]$/);
  });
}

describe('streamscore score --local', () => {
  it('writes one line per input, in input order: results and dead letters', async () => {
    const out = path.join(dir, 'all.jsonl');
    const { io: run, written } = io();
    expect(await runScore(input, flags(out), run)).toBe(0);
    checkLines(await outputLines(out));
    expect(written.stdout).toMatch(/scored 600 records .* locally .*: 597 results, 3 dead letters/);
    const right = (await outputLines(out)).filter(
      (l, i) => l.label === String(heldOut[i % heldOut.length]!.label),
    ).length;
    expect(right / (TOTAL - 3)).toBeGreaterThan(0.9);
  });

  it('resumes after the complete lines, cutting a partial last line, and appends the rest', async () => {
    const out = path.join(dir, 'resumed.jsonl');
    // 250 lines of an earlier run (marked, so we can tell they were kept) and half a line.
    const earlier = Array.from({ length: 250 }, (_, i) =>
      JSON.stringify({
        id: expectedId(i),
        label: '0',
        earlier: true,
        ...(isBad(i) ? { label: undefined, error: { code: 'WRONG_SHAPE' } } : {}),
      }),
    );
    await writeFile(out, earlier.join('\n') + '\n{"id":"digits.jsonl:25');
    const { io: run, written } = io();
    expect(await runScore(input, flags(out), run)).toBe(0);
    expect(written.stderr).toContain(`resuming: ${out} has 250 of 600 lines`);
    const lines = await outputLines(out);
    checkLines(lines);
    expect(lines.filter((l) => 'earlier' in l)).toHaveLength(250);
    expect(written.stdout).toMatch(/scored 350 records .*\(250 were already in the output\)/);

    // Everything is there: a third run has nothing to do.
    const again = io();
    expect(await runScore(input, flags(out), again.io)).toBe(0);
    expect(again.written.stdout).toContain('already has a line for each of the 600 records');
  });

  it('on the first signal finishes what is in flight and exits 130; the same command completes it', async () => {
    const out = path.join(dir, 'stopped.jsonl');
    const stop = new AbortController();
    const { io: run, written } = io({
      stop: stop.signal,
      progressEveryMs: 1,
      // Stop as soon as the first progress line reports some records written.
      stderr: (text) => {
        written.stderr += text;
        if (/score: [1-9]/.test(text)) stop.abort();
      },
    });
    expect(await runScore(input, { ...flags(out), concurrency: 64 }, run)).toBe(130);
    const partial = await outputLines(out);
    expect(partial.length).toBeGreaterThan(0);
    expect(partial.length).toBeLessThan(TOTAL);
    expect(written.stderr).toContain(`interrupted: ${out} has ${partial.length} of 600 lines`);

    const { io: resumed } = io();
    expect(await runScore(input, flags(out), resumed)).toBe(0);
    checkLines(await outputLines(out));
  });

  it('refuses an output with more lines than the input has records', async () => {
    const out = path.join(dir, 'other.jsonl');
    await writeFile(out, '{}\n'.repeat(TOTAL + 1));
    const { io: run, written } = io();
    expect(await runScore(input, flags(out), run)).toBe(1);
    expect(written.stderr).toContain('it is the output of another input');
  });

  it('names the file, line and field of a record that does not fit', async () => {
    const bad = path.join(dir, 'bad.jsonl');
    await writeFile(bad, '{"inputs":[]}\n{"inputs":[{"name":"pixels","shape":"64","data":[]}]}\n');
    const { io: run, written } = io();
    expect(await runScore(bad, flags(path.join(dir, 'bad.out.jsonl')), run)).toBe(1);
    expect(written.stderr).toContain('bad.jsonl:2: field "inputs[0].shape": expected an array');
  });

  it('puts the output next to the input by default', () => {
    expect(defaultOutput('/data/requests.csv')).toBe('/data/requests.results.jsonl');
  });
});
