/**
 * Hot swap for `model.version: latest`: follows the newest complete version of one model in the
 * repository and swaps it into a SwappableModel once it is loaded and warm.
 *
 * A version folder is complete once its card.json exists (writers put it last); a newer folder
 * without one is waiting, not refused. A complete version that fails to load or to warm up (a
 * checksum that disagrees with the card, a card that disagrees with the model, a different input
 * or output signature) is refused: logged naming the file, reported, and the current version keeps
 * serving; it is tried again on the next change or reload.
 *
 * Triggers: `reload()` (POST /models/reload) and `watch()`, an fs.watch on `<repository>/<name>/`
 * and on each version folder in it, debounced. Reloads run one at a time, in order.
 */
import { watch as fsWatch, type FSWatcher } from 'node:fs';
import { access } from 'node:fs/promises';
import path from 'node:path';
import { asStreamscoreError, StreamscoreError } from '../errors.js';
import { CARD_JSON, listModelVersions } from './repository.js';
import type { SwappableModel } from './swappable.js';
import type { ModelRunner, TensorSpec } from './types.js';

export type ReloadOutcome = 'swapped' | 'unchanged' | 'refused';

export interface ReloadResult {
  outcome: ReloadOutcome;
  model: string;
  /** The version directory serving before this reload. */
  previous: string;
  /** The version directory serving after it (refused: still `previous`). */
  current: string;
  /** The version that was tried (swapped or refused). */
  candidate?: string;
  /** Why a version was refused; `file` when the failure names one. */
  error?: { code: string; message: string; file?: string };
  /** Newer version folders without card.json yet. */
  waiting?: string[];
  ms: number;
  /** What asked for it: 'watch', 'http', … */
  trigger: string;
}

interface ReloaderLogger {
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  debug(obj: object, msg?: string): void;
}

export interface ModelReloaderOptions {
  /** Absolute repository folder. */
  repository: string;
  name: string;
  /** The version directory name serving now (e.g. "1"). */
  version: string;
  model: SwappableModel;
  /** Loads the model in `dir` and warms it (warm-up batches, autotune); disposes it if that fails. */
  prepare(dir: string): Promise<ModelRunner>;
  log: ReloaderLogger;
  /** Called with every swapped or refused result (metrics). */
  onResult?: (result: ReloadResult) => void;
  /** Quiet time after the last file-system event before reloading. Default 300 ms. */
  debounceMs?: number;
}

const sameTensors = (a: readonly TensorSpec[], b: readonly TensorSpec[]): boolean =>
  a.length === b.length &&
  a.every(
    (t, i) =>
      t.name === b[i]!.name &&
      t.dtype === b[i]!.dtype &&
      JSON.stringify(t.shape) === JSON.stringify(b[i]!.shape),
  );

async function exists(file: string): Promise<boolean> {
  try {
    await access(file);
    return true;
  } catch {
    return false;
  }
}

export class ModelReloader {
  private version: string;
  private chain: Promise<unknown> = Promise.resolve();
  private readonly watchers = new Map<string, FSWatcher>();
  private timer: NodeJS.Timeout | null = null;
  private closed = false;
  private readonly modelRoot: string;

  constructor(private readonly options: ModelReloaderOptions) {
    this.version = options.version;
    this.modelRoot = path.join(options.repository, options.name);
  }

  /** The version directory serving now. */
  get current(): string {
    return this.version;
  }

  /** Looks for a newer complete version and swaps it in; one reload at a time, in call order. */
  reload(trigger = 'reload'): Promise<ReloadResult> {
    const next = this.chain.then(() => this.reloadNow(trigger));
    this.chain = next.catch(() => undefined);
    return next;
  }

  /** Watches the model's folder and its version folders; a change reloads after a quiet time. */
  watch(): void {
    if (this.closed) return;
    this.addWatcher(this.modelRoot);
    void this.watchVersions();
  }

  /** Stops watching and waits for a reload in progress. */
  async close(): Promise<void> {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    for (const w of this.watchers.values()) w.close();
    this.watchers.clear();
    await this.chain;
  }

  private addWatcher(dir: string): void {
    if (this.closed || this.watchers.has(dir)) return;
    try {
      const watcher = fsWatch(dir, { persistent: false }, () => this.changed());
      watcher.on('error', () => {
        watcher.close();
        this.watchers.delete(dir);
      });
      this.watchers.set(dir, watcher);
    } catch (err) {
      this.options.log.debug({ err, dir }, 'cannot watch model folder');
    }
  }

  private async watchVersions(): Promise<void> {
    let versions: string[];
    try {
      versions = await listModelVersions(this.options.repository, this.options.name);
    } catch {
      return;
    }
    for (const v of versions) this.addWatcher(path.join(this.modelRoot, v));
  }

  private changed(): void {
    if (this.closed) return;
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = null;
      void this.watchVersions()
        .then(() => (this.closed ? undefined : this.reload('watch')))
        .catch((err: unknown) => this.options.log.warn({ err }, 'model reload failed'));
    }, this.options.debounceMs ?? 300);
    this.timer.unref();
  }

  private async reloadNow(trigger: string): Promise<ReloadResult> {
    const { name, model, log } = this.options;
    const started = performance.now();
    const previous = this.version;
    const base = { model: name, previous, trigger };
    const versions = await listModelVersions(this.options.repository, name);
    const waiting: string[] = [];
    let candidate: string | undefined;
    for (const v of versions.toReversed()) {
      if (await exists(path.join(this.modelRoot, v, CARD_JSON))) {
        candidate = v;
        break;
      }
      waiting.push(v);
    }
    const extra = waiting.length > 0 ? { waiting: waiting.reverse() } : {};
    if (waiting.length > 0) {
      log.debug({ model: name, waiting }, 'model version folders without card.json yet');
    }
    if (candidate === undefined || candidate === previous) {
      return { ...base, ...extra, outcome: 'unchanged', current: previous, ms: 0 };
    }

    const dir = path.join(this.modelRoot, candidate);
    log.info(
      { model: name, version: candidate, previous, dir, trigger },
      'loading new model version',
    );
    let result: ReloadResult;
    try {
      const next = await this.options.prepare(dir);
      const serving = model.info;
      if (
        !sameTensors(next.info.inputs, serving.inputs) ||
        !sameTensors(next.info.outputs, serving.outputs)
      ) {
        await next.dispose();
        throw new StreamscoreError(
          'MODEL_INVALID',
          `model in ${dir} has other inputs or outputs than version ${serving.version}, which queued requests were checked against; restart the worker to serve it`,
          { details: { dir, file: CARD_JSON } },
        );
      }
      model.swap(next);
      this.version = candidate;
      result = {
        ...base,
        ...extra,
        outcome: 'swapped',
        current: candidate,
        candidate,
        ms: Math.round(performance.now() - started),
      };
      log.info(
        { model: name, version: next.info.version, dir, previous, ms: result.ms, trigger },
        'model version swapped in',
      );
    } catch (err) {
      const error = asStreamscoreError(err, 'MODEL_INVALID');
      const code = error.code;
      const file =
        typeof error.details.file === 'string' ? path.join(dir, error.details.file) : undefined;
      result = {
        ...base,
        ...extra,
        outcome: 'refused',
        current: previous,
        candidate,
        error: { code, message: error.message, ...(file ? { file } : {}) },
        ms: Math.round(performance.now() - started),
      };
      log.warn(
        { err, code, model: name, version: candidate, dir, file, serving: previous, trigger },
        `model version ${candidate} refused, version ${previous} keeps serving: ${error.message}`,
      );
    }
    this.options.onResult?.(result);
    return result;
  }
}
