import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { DIGITS_PIXELS, loadDigitsDataset, packPixels } from '../../src/model/digits-data.js';
import type { CrashMode, ReplicaPool } from '../../src/model/replica-pool.js';
import { startReplicaPool } from '../../src/model/replica-pool.js';
import type { TfjsModelRunner } from '../../src/model/tfjs-runner.js';
import type { PackedBatch } from '../../src/model/types.js';
import { createLogger, silentLogger } from '../../src/telemetry/logger.js';
import { rejection } from '../helpers/errors.js';
import { DIGITS_DIR, copyDigitsModel, loadDigitsRunner, tempDir } from './helpers.js';

const { heldOut } = loadDigitsDataset();

/** `size` held-out digits from `from`, packed into shared memory as the worker core packs them. */
function sharedBatch(from: number, size: number): PackedBatch {
  const pixels = new Float32Array(new SharedArrayBuffer(size * DIGITS_PIXELS * 4));
  for (let i = 0; i < size; i++) {
    pixels.set(heldOut[(from + i) % heldOut.length]!.pixels, i * DIGITS_PIXELS);
  }
  return { size, inputs: { pixels } };
}

/** The raw bits of float outputs: equal bits, not merely close values. */
const bits = (values: Float32Array | undefined) =>
  values === undefined
    ? undefined
    : new Uint32Array(values.buffer, values.byteOffset, values.length);

/** A live worker thread shows up as one 'MessagePort' among the active resources. */
const threads = () =>
  process.getActiveResourcesInfo().filter((name) => name === 'MessagePort').length;

let local: TfjsModelRunner;
let baseline: number;

beforeAll(async () => {
  baseline = threads();
  local = await loadDigitsRunner();
});
afterAll(async () => {
  await local.dispose();
});

describe('ReplicaPool with 2 replicas', () => {
  let pool: ReplicaPool;
  beforeAll(async () => {
    pool = await startReplicaPool({
      modelDir: DIGITS_DIR,
      backend: 'wasm',
      replicas: 2,
      log: silentLogger,
    });
  });
  afterAll(async () => {
    await pool.dispose();
  });

  it('reports the model, its backend and its replicas', () => {
    expect(pool.info).toEqual(local.info);
    expect(pool.info.backend).toBe('wasm');
    expect(pool.replicas).toBe(2);
    expect(pool.concurrency).toBe(2);
    expect(pool.busy).toBe(0);
    expect(threads()).toBe(baseline + 2);
  });

  it('returns exactly the outputs of an in-thread runner', async () => {
    for (const [from, size] of [
      [0, 1],
      [5, 7],
      [40, 32],
      [0, 100],
    ] as const) {
      const batch = sharedBatch(from, size);
      const expected = await local.predict(batch);
      const out = await pool.predict(batch);
      expect(Object.keys(out)).toEqual(['probabilities']);
      expect(out.probabilities).toBeInstanceOf(Float32Array);
      expect(bits(out.probabilities)).toEqual(bits(expected.probabilities));
    }
  });

  it('accepts ordinary (non-shared) inputs and leaves the caller’s array intact', async () => {
    const pixels = packPixels(heldOut.slice(10, 14));
    const copy = pixels.slice();
    const out = await pool.predict({ size: 4, inputs: { pixels } });
    const expected = await local.predict({ size: 4, inputs: { pixels } });
    expect(bits(out.probabilities)).toEqual(bits(expected.probabilities));
    expect(pixels.buffer.byteLength).toBe(4 * DIGITS_PIXELS * 4); // not transferred away
    expect(pixels).toEqual(copy);
  });

  it('runs concurrent predicts on both replicas, each resolving with its own outputs', async () => {
    const batches = Array.from({ length: 12 }, (_, i) => sharedBatch(i * 9, 1 + ((i * 5) % 24)));
    const expected = await Promise.all(batches.map((b) => local.predict(b)));
    const results = batches.map((b) => pool.predict(b));
    // Both replicas took a batch at once; the other ten wait in the queue.
    expect(pool.busy).toBe(2);
    const outputs = await Promise.all(results);
    outputs.forEach((out, i) =>
      expect(bits(out.probabilities)).toEqual(bits(expected[i]!.probabilities)),
    );
    expect(pool.busy).toBe(0);
  });

  it('keeps the event loop turning while a replica predicts a large batch', async () => {
    const batch = sharedBatch(0, 4_000);
    let ticksWhileBusy = 0;
    const timer = setInterval(() => {
      if (pool.busy > 0) ticksWhileBusy += 1;
    }, 1);
    try {
      const out = await pool.predict(batch);
      expect(out.probabilities).toHaveLength(4_000 * 10);
    } finally {
      clearInterval(timer);
    }
    expect(ticksWhileBusy).toBeGreaterThan(0);
  });

  it('rejects a model exception with the StreamscoreError the replica raised, and survives it', async () => {
    const wrong = await rejection(
      pool.predict({ size: 2, inputs: { pixels: new Float32Array(127) } }),
    );
    expect(wrong.code).toBe('WRONG_SHAPE');
    expect(wrong.message).toMatch(/127 values/);
    expect(wrong.details).toMatchObject({ input: 'pixels', size: 2, length: 127 });
    expect(wrong.cause).toBeInstanceOf(Error);
    expect((wrong.cause as Error).stack).toMatch(/tfjs-runner/);
    const missing = await rejection(pool.predict({ size: 1, inputs: {} }));
    expect(missing.code).toBe('MISSING_INPUT');
    expect(pool.replicas).toBe(2);
    expect(threads()).toBe(baseline + 2);
    const batch = sharedBatch(3, 3);
    expect(bits((await pool.predict(batch)).probabilities)).toEqual(
      bits((await local.predict(batch)).probabilities),
    );
  });

  it('warms up every replica', async () => {
    await pool.warmUp([1, 16]);
    expect(pool.replicas).toBe(2);
    expect(pool.busy).toBe(0);
  });

  it('dispose() finishes batches in flight, rejects queued ones, ends every thread, and is idempotent', async () => {
    const inFlight = [pool.predict(sharedBatch(0, 64)), pool.predict(sharedBatch(64, 64))];
    const queued = pool.predict(sharedBatch(128, 8));
    const disposing = pool.dispose();
    const again = pool.dispose();
    expect(again).toBe(disposing);
    expect((await rejection(queued)).code).toBe('MODEL_FAILED');
    const done = await Promise.all(inFlight);
    done.forEach((out) => expect(out.probabilities).toHaveLength(64 * 10));
    await disposing;
    expect(pool.replicas).toBe(0);
    expect(threads()).toBe(baseline);
    await pool.dispose();
    expect((await rejection(pool.predict(sharedBatch(0, 1)))).code).toBe('MODEL_FAILED');
  });
});

describe('ReplicaPool crashes', () => {
  let pool: ReplicaPool;
  /** Batch sizes that make a replica die: on their first dispatch only, or every time. */
  const CRASH_ONCE = 13;
  const CRASH_ONCE_PLAIN = 14;
  const CRASH_ALWAYS = 17;
  const dispatched = new Map<number, number>();
  const lines: { msg: string; exitCode?: number; replica?: number }[] = [];

  beforeAll(async () => {
    pool = await startReplicaPool({
      modelDir: DIGITS_DIR,
      backend: 'wasm',
      replicas: 1,
      log: createLogger('info', { write: (line: string) => lines.push(JSON.parse(line)) }),
      // maxCrashRetries left at its default, 2.
      testHooks: {
        crashOnDispatch(batch, crashes): CrashMode | undefined {
          dispatched.set(batch.size, (dispatched.get(batch.size) ?? 0) + 1);
          if (batch.size === CRASH_ONCE && crashes === 0) return 'exit';
          if (batch.size === CRASH_ONCE_PLAIN && crashes === 0) return 'throw';
          if (batch.size === CRASH_ALWAYS) return 'throw';
          return undefined;
        },
      },
    });
  });
  afterAll(async () => {
    await pool.dispose();
  });

  it('returns exactly the outputs of an in-thread runner with 1 replica', async () => {
    const batch = sharedBatch(20, 32);
    expect(bits((await pool.predict(batch)).probabilities)).toEqual(
      bits((await local.predict(batch)).probabilities),
    );
    expect(pool.concurrency).toBe(1);
  });

  it('replaces a replica that died and re-runs the batch it held (shared inputs)', async () => {
    const batch = sharedBatch(50, CRASH_ONCE);
    const expected = await local.predict(batch);
    const out = await pool.predict(batch);
    expect(bits(out.probabilities)).toEqual(bits(expected.probabilities));
    expect(dispatched.get(CRASH_ONCE)).toBe(2);
    expect(pool.replicas).toBe(1);
    expect(threads()).toBe(baseline + 1);
    const died = lines.find((l) => l.msg === 'model replica thread died');
    expect(died).toMatchObject({ replica: 0, exitCode: 70 });
  });

  it('re-runs a crashed batch of ordinary inputs too (copied once into shared memory)', async () => {
    const pixels = packPixels(heldOut.slice(0, CRASH_ONCE_PLAIN));
    const expected = await local.predict({ size: CRASH_ONCE_PLAIN, inputs: { pixels } });
    const out = await pool.predict({ size: CRASH_ONCE_PLAIN, inputs: { pixels } });
    expect(bits(out.probabilities)).toEqual(bits(expected.probabilities));
    expect(pixels).toHaveLength(CRASH_ONCE_PLAIN * DIGITS_PIXELS);
    await vi.waitFor(() => expect(pool.replicas).toBe(1));
  });

  it('rejects a batch that kills every replica after maxCrashRetries (2) re-runs, with REPLICA_CRASHED', async () => {
    const err = await rejection(pool.predict(sharedBatch(0, CRASH_ALWAYS)));
    expect(err.code).toBe('REPLICA_CRASHED');
    expect(err.details).toMatchObject({ crashes: 3 });
    expect(dispatched.get(CRASH_ALWAYS)).toBe(3);
    // The pool recovers: a replacement starts and later batches run.
    const batch = sharedBatch(7, 5);
    expect(bits((await pool.predict(batch)).probabilities)).toEqual(
      bits((await local.predict(batch)).probabilities),
    );
    await vi.waitFor(() => expect(pool.replicas).toBe(1));
    expect(threads()).toBe(baseline + 1);
  });

  it('leaves no thread behind once disposed', async () => {
    await pool.dispose();
    expect(threads()).toBe(baseline);
  });
});

describe('startReplicaPool failures', () => {
  it('rejects with CHECKSUM_MISMATCH for a model whose weights changed, leaving no thread', async () => {
    const tmp = await tempDir('replica-pool');
    try {
      const dir = await copyDigitsModel(tmp.dir);
      const weights = path.join(dir, 'weights.bin');
      const bytes = await readFile(weights);
      bytes[0] = bytes[0]! ^ 0xff;
      await writeFile(weights, bytes);
      const err = await rejection(
        startReplicaPool({ modelDir: dir, backend: 'wasm', replicas: 2, log: silentLogger }),
      );
      expect(err.code).toBe('CHECKSUM_MISMATCH');
      expect(err.message).toMatch(/weights\.bin .* has sha256/);
      expect(err.details).toMatchObject({ file: 'weights.bin' });
      expect(threads()).toBe(baseline);
    } finally {
      await tmp.remove();
    }
  });

  it('rejects a replica count that is not a positive integer', async () => {
    const err = await rejection(
      startReplicaPool({ modelDir: DIGITS_DIR, backend: 'wasm', replicas: 0, log: silentLogger }),
    );
    expect(err.code).toBe('CONFIG_INVALID');
  });
});
