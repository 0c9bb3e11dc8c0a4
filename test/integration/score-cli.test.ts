/**
 * `streamscore score` as users run it: its own process, scoring a file of 100,000 records through
 * a running worker (started in this process) over the real broker; killed with SIGKILL about
 * half-way, then run again with the same command. The output must end up with exactly one line per
 * input, in input order, each the result for its input (or the dead letter of an input made bad
 * on purpose).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { createReadStream, createWriteStream } from 'node:fs';
import { open, stat } from 'node:fs/promises';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { afterAll, afterEach, beforeAll, describe, expect, inject, it } from 'vitest';
import { loadConfig, type StreamscoreConfig } from '../../src/config/index.js';
import { loadDigitsDataset } from '../../src/model/digits-data.js';
import { startService, type Service } from '../../src/service.js';
import { silentLogger } from '../../src/telemetry/logger.js';
import { REPO_ROOT, tempDir } from '../model/helpers.js';
import { freshTopics, uniqueTopic } from './helpers/kafka.js';

const brokers = inject('kafkaBrokers');
const TOTAL = 100_000;
/** Every BAD_EVERY-th input has 63 values: the worker dead-letters it (WRONG_SHAPE). */
const BAD_EVERY = 1000;
const BAD_OFFSET = 417;

const isBad = (i: number) => i % BAD_EVERY === BAD_OFFSET;

interface Run {
  child: ChildProcess;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  output: () => string;
}

const running = new Set<ChildProcess>();

function scoreCli(args: string[], env: Record<string, string>): Run {
  const inherited = Object.fromEntries(
    Object.entries(process.env).filter(([key]) => !key.startsWith('STREAMSCORE_')),
  );
  const child = spawn(
    process.execPath,
    ['--import', 'tsx', path.join(REPO_ROOT, 'src/cli/main.ts'), 'score', ...args],
    { cwd: REPO_ROOT, env: { ...inherited, ...env }, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  running.add(child);
  let output = '';
  child.stdout!.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr!.on('data', (chunk: Buffer) => (output += chunk.toString()));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('exit', (code, signal) => {
      running.delete(child);
      resolve({ code, signal });
    }),
  );
  return { child, exited, output: () => output };
}

/** Counts the newlines of a growing file, reading only what was added since the last call. */
function lineCounter(file: string) {
  let offset = 0;
  let lines = 0;
  return async (): Promise<number> => {
    let handle;
    try {
      handle = await open(file, 'r');
    } catch {
      return 0;
    }
    try {
      const buffer = Buffer.alloc(1 << 20);
      for (;;) {
        const { bytesRead } = await handle.read(buffer, 0, buffer.length, offset);
        if (bytesRead === 0) break;
        for (let i = 0; i < bytesRead; i++) if (buffer[i] === 10) lines++;
        offset += bytesRead;
      }
    } finally {
      await handle.close();
    }
    return lines;
  };
}

describe('streamscore score: kill -9 half-way, run again', () => {
  let service: Service;
  let config: StreamscoreConfig;
  let dir: string;
  let removeDir: () => Promise<void>;

  beforeAll(async () => {
    ({ dir, remove: removeDir } = await tempDir('score-cli'));
    const topics = await freshTopics(brokers, 'score-cli', ['requests', 'results', 'dlq'], 4);
    config = loadConfig({
      env: {},
      overrides: {
        kafka: { brokers, groupId: uniqueTopic('score-cli-worker') },
        topics: { requests: [topics.requests], results: topics.results, deadLetter: topics.dlq },
        model: { name: 'digits', version: '1', replicas: 1 },
        log: { level: 'silent' },
        http: { port: 0 },
      },
    });
    service = await startService(config, { log: silentLogger });
  });

  afterEach(async () => {
    for (const child of running) child.kill('SIGKILL');
  });

  afterAll(async () => {
    await service?.stop();
    await removeDir?.();
  });

  it(`scores ${TOTAL.toLocaleString('en-US')} records, resumed after SIGKILL: one line per input, in order`, async () => {
    const { heldOut } = loadDigitsDataset();
    const input = path.join(dir, 'digits.jsonl');
    const out = path.join(dir, 'digits.results.jsonl');
    const writer = createWriteStream(input);
    for (let i = 0; i < TOTAL; i++) {
      const pixels = Array.from(heldOut[i % heldOut.length]!.pixels);
      const data = isBad(i) ? pixels.slice(1) : pixels;
      const line = JSON.stringify({ inputs: [{ name: 'pixels', shape: [data.length], data }] });
      if (!writer.write(`${line}\n`)) await once(writer, 'drain');
    }
    writer.end();
    await once(writer, 'finish');

    const env = {
      STREAMSCORE_KAFKA_BROKERS: brokers.join(','),
      STREAMSCORE_TOPICS_REQUESTS: config.topics.requests[0]!,
      STREAMSCORE_TOPICS_RESULTS: config.topics.results,
      STREAMSCORE_TOPICS_DEAD_LETTER: config.topics.deadLetter,
      STREAMSCORE_MODEL_VERSION: '1',
    };
    const args = [input, '--out', out, '--timeout', '60000'];

    // First run: killed without warning once about half the lines are written.
    const first = scoreCli(args, env);
    const count = lineCounter(out);
    let atKill = 0;
    for (;;) {
      atKill = await count();
      if (atKill >= TOTAL / 2) break;
      const exited = await Promise.race([
        first.exited.then(() => true),
        new Promise((resolve) => setTimeout(resolve, 100, false)),
      ]);
      if (exited) throw new Error(`the first run ended before it was killed:\n${first.output()}`);
    }
    first.child.kill('SIGKILL');
    expect((await first.exited).signal).toBe('SIGKILL');
    const sizeAtKill = (await stat(out)).size;

    // Second run: the same command resumes after the complete lines and appends the rest.
    const second = scoreCli(args, env);
    const exit = await second.exited;
    expect(exit, second.output()).toEqual({ code: 0, signal: null });
    const resumed = /resuming: .* has (\d+) of/.exec(second.output());
    expect(resumed, second.output()).not.toBeNull();
    const resumedFrom = Number(resumed![1]);
    expect(resumedFrom).toBeGreaterThanOrEqual(atKill);

    const base = path.basename(input);
    let n = 0;
    let deadLetters = 0;
    let right = 0;
    const problems: string[] = [];
    for await (const text of createInterface({ input: createReadStream(out) })) {
      const line = JSON.parse(text) as {
        id: string;
        label?: string;
        error?: { code: string; message: string };
      };
      if (line.id !== `${base}:${n}`) problems.push(`line ${n + 1}: id ${line.id}`);
      if (isBad(n)) {
        if (line.error?.code !== 'WRONG_SHAPE') problems.push(`line ${n + 1}: ${text}`);
        else deadLetters++;
      } else if (line.label === undefined) {
        problems.push(`line ${n + 1}: ${text.slice(0, 200)}`);
      } else if (line.label === String(heldOut[n % heldOut.length]!.label)) {
        right++;
      }
      n++;
    }
    const summary =
      second
        .output()
        .split('\n')
        .find((l) => l.startsWith('scored ')) ?? '';
    console.log(
      `score CLI: ${TOTAL} records; killed at ${atKill} lines (${sizeAtKill} bytes), resumed from ${resumedFrom}; ` +
        `${deadLetters} dead letters, ${right} labelled as the true digit; second run: ${summary}`,
    );
    expect(problems.slice(0, 10)).toEqual([]);
    expect(n).toBe(TOTAL);
    expect(deadLetters).toBe(TOTAL / BAD_EVERY);
    expect(right / (TOTAL - deadLetters)).toBeGreaterThanOrEqual(0.9);
  });
});
