import { createHash } from 'node:crypto';
import { cp, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { selectBackend } from '../../src/model/backend.js';
import { loadModel } from '../../src/model/repository.js';
import type { TfjsModelRunner } from '../../src/model/tfjs-runner.js';

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const MODELS_ROOT = path.join(REPO_ROOT, 'models');
export const DIGITS_DIR = path.join(MODELS_ROOT, 'digits', '1');

export interface LogRecord {
  level: 'info' | 'debug' | 'warn';
  obj: Record<string, unknown>;
  msg: string | undefined;
}

/** A pino-shaped logger that keeps what it is given, for assertions. */
export function recordingLogger() {
  const records: LogRecord[] = [];
  const at =
    (level: LogRecord['level']) =>
    (obj: object, msg?: string): void => {
      records.push({ level, obj: obj as Record<string, unknown>, msg });
    };
  return { records, info: at('info'), debug: at('debug'), warn: at('warn') };
}

/** A fresh temp dir; the returned function removes it. */
export async function tempDir(
  prefix: string,
): Promise<{ dir: string; remove: () => Promise<void> }> {
  const dir = await mkdtemp(path.join(os.tmpdir(), `streamscore-${prefix}-`));
  return { dir, remove: () => rm(dir, { recursive: true, force: true }) };
}

/** Copy models/digits/1 into `parent/digits/1` and return that path. */
export async function copyDigitsModel(parent: string): Promise<string> {
  const target = path.join(parent, 'digits', '1');
  await cp(DIGITS_DIR, target, { recursive: true });
  return target;
}

/** The digits model loaded in this thread on the wasm backend, as the tests compare against. */
export async function loadDigitsRunner(): Promise<TfjsModelRunner> {
  const selected = await selectBackend('wasm', recordingLogger());
  return loadModel(DIGITS_DIR, {
    tf: selected.tf,
    backend: selected.backend,
    log: recordingLogger(),
  });
}

/**
 * Copies models/digits/1 to <repository>/digits/<version>, card.json (saying `version`) last, so
 * a watcher never sees a complete-looking version early. `corrupt` may alter weights.bin first.
 */
export async function writeDigitsVersion(
  repository: string,
  version: string,
  corrupt?: (weights: Buffer) => void,
  /** Record the altered weights' checksum in the card: a valid version that behaves differently. */
  rehash = false,
): Promise<string> {
  const target = path.join(repository, 'digits', version);
  await cp(DIGITS_DIR, target, {
    recursive: true,
    filter: (src) => path.basename(src) !== 'card.json',
  });
  if (corrupt) {
    const weights = await readFile(path.join(target, 'weights.bin'));
    corrupt(weights);
    await writeFile(path.join(target, 'weights.bin'), weights);
  }
  const card = JSON.parse(await readFile(path.join(DIGITS_DIR, 'card.json'), 'utf8')) as {
    version: string;
    files: Record<string, string>;
  };
  card.version = version;
  if (rehash) {
    const weights = await readFile(path.join(target, 'weights.bin'));
    card.files['weights.bin'] = createHash('sha256').update(weights).digest('hex');
  }
  await writeFile(path.join(target, 'card.json'), JSON.stringify(card, null, 2));
  return target;
}
