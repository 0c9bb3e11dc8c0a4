import { cp, mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { StreamscoreError } from '../../src/errors.js';
import { ModelReloader, type ReloadResult } from '../../src/model/reloader.js';
import { SwappableModel } from '../../src/model/swappable.js';
import type { BatchOutputs, ModelInfo, ModelRunner, PackedBatch } from '../../src/model/types.js';
import { recordingLogger, tempDir, DIGITS_DIR } from './helpers.js';

/** A runner whose predicts wait until released by the test. */
class GatedRunner implements ModelRunner {
  readonly info: ModelInfo;
  disposed = 0;
  predicts = 0;
  private gates: (() => void)[] = [];
  constructor(
    version: string,
    readonly concurrency = 1,
  ) {
    this.info = {
      name: 'm',
      version,
      backend: 'fake',
      inputs: [{ name: 'x', dtype: 'float32', shape: [1] }],
      outputs: [{ name: 'y', dtype: 'float32', shape: [1] }],
    };
  }
  async predict(batch: PackedBatch): Promise<BatchOutputs> {
    this.predicts++;
    await new Promise<void>((resolve) => this.gates.push(resolve));
    return { y: new Float32Array(batch.size).fill(Number(this.info.version)) };
  }
  open(): void {
    for (const g of this.gates.splice(0)) g();
  }
  async dispose(): Promise<void> {
    this.disposed++;
  }
}

const batch: PackedBatch = { size: 2, inputs: { x: new Float32Array(2) } };
const tick = () => new Promise((r) => setImmediate(r));

describe('SwappableModel', () => {
  it('delegates to the current runner; info and concurrency follow the swap', async () => {
    const v1 = new GatedRunner('1', 3);
    const v2 = new GatedRunner('2', 2);
    const model = new SwappableModel(v1);
    expect(model.info.version).toBe('1');
    expect(model.concurrency).toBe(3);
    expect(model.swap(v2)).toBe(v1);
    expect(model.info.version).toBe('2');
    expect(model.concurrency).toBe(2);
    await tick();
    expect(v1.disposed).toBe(1); // nothing in flight: disposed at once
    const p = model.predict(batch);
    v2.open();
    expect(Array.from((await p).y!)).toEqual([2, 2]);
  });

  it('lets running batches finish on the old runner and disposes it after the last one', async () => {
    const v1 = new GatedRunner('1');
    const v2 = new GatedRunner('2');
    const model = new SwappableModel(v1);
    const lease = model.lease();
    const running = model.predict(batch);
    await tick();
    model.swap(v2);
    const after = model.predict(batch);
    await tick();
    expect(v1.predicts).toBe(1);
    expect(v2.predicts).toBe(1);
    // The leased batch still goes to v1 (narrowing retries of an old batch stay on its version).
    expect(lease.model).toBe(v1);
    expect(lease.model.info.version).toBe('1');
    v1.open();
    expect(Array.from((await running).y!)).toEqual([1, 1]);
    await tick();
    expect(v1.disposed).toBe(0); // the lease still holds it
    expect(model.retiring).toBe(1);
    lease.release();
    lease.release(); // idempotent
    await tick();
    expect(v1.disposed).toBe(1);
    expect(model.retiring).toBe(0);
    v2.open();
    expect(Array.from((await after).y!)).toEqual([2, 2]);
    await model.dispose();
    expect(v2.disposed).toBe(1);
    expect(v1.disposed).toBe(1);
    expect(() => model.lease()).toThrow(StreamscoreError);
  });

  it('dispose waits for retired runners', async () => {
    let finish!: () => void;
    const slow: ModelRunner = {
      ...new GatedRunner('1'),
      info: new GatedRunner('1').info,
      predict: () => Promise.resolve({}),
      dispose: () => new Promise<void>((r) => (finish = r)),
    };
    const model = new SwappableModel(slow);
    model.swap(new GatedRunner('2'));
    let done = false;
    const disposed = model.dispose().then(() => (done = true));
    await tick();
    expect(done).toBe(false);
    finish();
    await disposed;
    expect(done).toBe(true);
  });
});

describe('ModelReloader', () => {
  async function setup() {
    const { dir, remove } = await tempDir('reloader');
    await cp(DIGITS_DIR, path.join(dir, 'digits', '1'), { recursive: true });
    const v1 = new GatedRunner('1');
    const model = new SwappableModel(v1);
    const prepared: string[] = [];
    const results: ReloadResult[] = [];
    const log = recordingLogger();
    const reloader = new ModelReloader({
      repository: dir,
      name: 'digits',
      version: '1',
      model,
      log,
      debounceMs: 50,
      onResult: (r) => results.push(r),
      prepare: async (versionDir) => {
        prepared.push(path.basename(versionDir));
        const card = JSON.parse(await readFile(path.join(versionDir, 'card.json'), 'utf8')) as {
          version: string;
        };
        if (card.version === 'bad') {
          throw new StreamscoreError('CHECKSUM_MISMATCH', `weights.bin in ${versionDir} differs`, {
            details: { dir: versionDir, file: 'weights.bin' },
          });
        }
        return new GatedRunner(card.version);
      },
    });
    const addVersion = async (v: string, cardVersion = v, withCard = true) => {
      const target = path.join(dir, 'digits', v);
      await mkdir(target, { recursive: true });
      if (withCard) {
        await writeFile(path.join(target, 'card.json'), JSON.stringify({ version: cardVersion }));
      }
    };
    return { dir, remove, model, reloader, prepared, results, log, addVersion, v1 };
  }

  it('swaps in the newest complete version, ignores folders without card.json, refuses failures', async () => {
    const t = await setup();
    try {
      expect((await t.reloader.reload('test')).outcome).toBe('unchanged');
      await t.addVersion('2');
      await t.addVersion('3', '3', false); // no card.json yet
      const swapped = await t.reloader.reload('test');
      expect(swapped).toMatchObject({
        outcome: 'swapped',
        previous: '1',
        current: '2',
        waiting: ['3'],
      });
      expect(t.model.info.version).toBe('2');
      await tick();
      expect(t.v1.disposed).toBe(1);

      await t.addVersion('3', 'bad');
      const refused = await t.reloader.reload('test');
      expect(refused).toMatchObject({
        outcome: 'refused',
        current: '2',
        candidate: '3',
        error: { code: 'CHECKSUM_MISMATCH', file: path.join(t.dir, 'digits', '3', 'weights.bin') },
      });
      expect(t.model.info.version).toBe('2');
      const warn = t.log.records.find((r) => r.level === 'warn');
      expect(warn?.obj.file).toBe(path.join(t.dir, 'digits', '3', 'weights.bin'));
      // Refused means "try again": fixed, it is taken on the next reload.
      await t.addVersion('3');
      expect((await t.reloader.reload('test')).outcome).toBe('swapped');
      expect(t.results.map((r) => r.outcome)).toEqual(['swapped', 'refused', 'swapped']);
    } finally {
      await t.reloader.close();
      await t.remove();
    }
  });

  it('watches the folder: a new version swaps in once its card.json is written', async () => {
    const t = await setup();
    try {
      t.reloader.watch();
      await t.addVersion('2', '2', false);
      await new Promise((r) => setTimeout(r, 300));
      expect(t.model.info.version).toBe('1');
      await writeFile(
        path.join(t.dir, 'digits', '2', 'card.json'),
        JSON.stringify({ version: '2' }),
      );
      for (let i = 0; i < 100 && t.model.info.version !== '2'; i++) {
        await new Promise((r) => setTimeout(r, 20));
      }
      expect(t.model.info.version).toBe('2');
      expect(t.prepared).toEqual(['2']);
    } finally {
      await t.reloader.close();
      await t.remove();
    }
  });
});
