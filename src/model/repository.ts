/**
 * The model repository on disk: `<root>/<name>/<version>/{card.json, model.json, weights...}`,
 * versions being decimal directory names (the layout TF Serving and Triton use).
 *
 * Loading reads every file the card lists, checks its sha256, and hands tfjs those same bytes;
 * then it checks the loaded model's tensor names and shapes against the card, so the codec
 * (which trusts the card) and the model cannot disagree.
 */
import { createHash } from 'node:crypto';
import { readFile, readdir } from 'node:fs/promises';
import path from 'node:path';
import type * as tfjs from '@tensorflow/tfjs';
import { StreamscoreError } from '../errors.js';
import type { ModelCard, TensorCard } from './card.js';
import { parseModelCard } from './card.js';
import { MODEL_JSON, fileSystemLoader, resolveInside } from './fs-io.js';
import type { TfjsModel } from './tfjs-runner.js';
import { TfjsModelRunner } from './tfjs-runner.js';

export const CARD_JSON = 'card.json';

/** The part of a pino logger this module uses. */
export interface RepositoryLogger {
  info(obj: object, msg?: string): void;
  debug(obj: object, msg?: string): void;
}

export interface LoadModelOptions {
  tf: typeof tfjs;
  /** The active backend's name (from `selectBackend`), reported in `runner.info.backend`. */
  backend: string;
  log: RepositoryLogger;
}

function isNotFound(err: unknown): boolean {
  return err instanceof Error && (err as NodeJS.ErrnoException).code === 'ENOENT';
}

export function sha256Hex(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

/**
 * The model names in the repository: its sub-directories (but hidden ones), sorted. Throws
 * `MODEL_NOT_FOUND` when `repositoryRoot` does not exist.
 */
export async function listModelNames(repositoryRoot: string): Promise<string[]> {
  let entries: import('node:fs').Dirent[];
  try {
    entries = await readdir(repositoryRoot, { withFileTypes: true });
  } catch (err) {
    if (isNotFound(err)) {
      throw new StreamscoreError('MODEL_NOT_FOUND', `no model repository at ${repositoryRoot}`, {
        cause: err,
        details: { repository: repositoryRoot },
      });
    }
    throw err;
  }
  return entries
    .filter((e) => e.isDirectory() && !e.name.startsWith('.'))
    .map((e) => e.name)
    .sort();
}

/**
 * The version directories of model `name`, oldest first (numeric order, so `latest` is the last).
 * Throws `MODEL_NOT_FOUND` for an invalid name or a model that is not in the repository.
 */
export async function listModelVersions(repositoryRoot: string, name: string): Promise<string[]> {
  if (name === '' || name === '.' || name === '..' || /[/\\]/.test(name)) {
    throw new StreamscoreError('MODEL_NOT_FOUND', `invalid model name "${name}"`, {
      details: { model: name },
    });
  }
  const modelRoot = path.join(repositoryRoot, name);
  let entries: import('node:fs').Dirent[];
  try {
    entries = await readdir(modelRoot, { withFileTypes: true });
  } catch (err) {
    if (isNotFound(err)) {
      throw new StreamscoreError('MODEL_NOT_FOUND', `no model "${name}" in ${repositoryRoot}`, {
        cause: err,
        details: { model: name, repository: repositoryRoot },
      });
    }
    throw err;
  }
  return (
    entries
      .filter((e) => e.isDirectory() && /^[0-9]+$/.test(e.name))
      .map((e) => e.name)
      // Numeric, not lexical: 10 is newer than 9. BigInt so any length of digits compares right.
      .sort((a, b) => (BigInt(a) < BigInt(b) ? -1 : BigInt(a) > BigInt(b) ? 1 : 0))
  );
}

/**
 * The directory of model `name` at `version` under `repositoryRoot`; 'latest' is the highest
 * numeric version directory. Throws `MODEL_NOT_FOUND` when there is none.
 */
export async function resolveModelDir(
  repositoryRoot: string,
  name: string,
  version: string | 'latest',
): Promise<string> {
  if (version !== 'latest' && !/^[0-9]+$/.test(version)) {
    throw new StreamscoreError(
      'MODEL_NOT_FOUND',
      `model version must be a number or "latest", got "${version}"`,
      {
        details: { model: name, version },
      },
    );
  }
  const modelRoot = path.join(repositoryRoot, name);
  const versions = await listModelVersions(repositoryRoot, name);
  const chosen =
    version === 'latest' ? versions.at(-1) : versions.find((v) => BigInt(v) === BigInt(version));
  if (chosen === undefined) {
    throw new StreamscoreError(
      'MODEL_NOT_FOUND',
      version === 'latest'
        ? `model "${name}" has no version directories in ${modelRoot}`
        : `model "${name}" has no version ${version} in ${modelRoot} (found: ${versions.join(', ') || 'none'})`,
      { details: { model: name, version, repository: repositoryRoot, available: versions } },
    );
  }
  return path.join(modelRoot, chosen);
}

/** Read and validate `card.json` in a version directory (no checksums: `loadModel` checks those). */
export async function readModelCard(dir: string): Promise<ModelCard> {
  const file = path.join(dir, CARD_JSON);
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    if (isNotFound(err)) {
      throw new StreamscoreError('MODEL_NOT_FOUND', `no ${CARD_JSON} in ${dir}`, {
        cause: err,
        details: { dir, file: CARD_JSON },
      });
    }
    throw err;
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new StreamscoreError('MODEL_INVALID', `${file} is not JSON`, {
      cause: err,
      details: { dir, file: CARD_JSON },
    });
  }
  return parseModelCard(json, file);
}

/** Read every file the card lists and check its sha256; returns the verified bytes. */
async function readVerified(dir: string, card: ModelCard): Promise<Map<string, Uint8Array>> {
  if (!(MODEL_JSON in card.files)) {
    throw new StreamscoreError(
      'MODEL_INVALID',
      `${CARD_JSON} in ${dir} does not list ${MODEL_JSON} in "files"`,
      {
        details: { dir, file: MODEL_JSON },
      },
    );
  }
  const verified = new Map<string, Uint8Array>();
  for (const [file, expected] of Object.entries(card.files)) {
    let bytes: Uint8Array;
    try {
      bytes = await readFile(resolveInside(dir, file));
    } catch (err) {
      if (isNotFound(err)) {
        throw new StreamscoreError(
          'MODEL_NOT_FOUND',
          `model file ${file} listed in ${CARD_JSON} is missing in ${dir}`,
          {
            cause: err,
            details: { dir, file },
          },
        );
      }
      throw err;
    }
    const actual = sha256Hex(bytes);
    if (actual !== expected) {
      throw new StreamscoreError(
        'CHECKSUM_MISMATCH',
        `model file ${file} in ${dir} has sha256 ${actual}, ${CARD_JSON} says ${expected}`,
        { details: { dir, file, expected, actual } },
      );
    }
    verified.set(path.posix.normalize(file), bytes);
  }
  return verified;
}

/** Shape of one example as the model declares it: batch dimension dropped, unknowns as null. */
function exampleShape(
  shape: readonly (number | null)[] | undefined,
): (number | null)[] | undefined {
  return shape?.slice(1).map((d) => (d === null || d < 0 ? null : d));
}

function checkTensors(
  dir: string,
  kind: 'input' | 'output',
  cards: readonly TensorCard[],
  actual: { name: string; shape: (number | null)[] | undefined }[],
): void {
  if (actual.length !== cards.length) {
    throw new StreamscoreError(
      'MODEL_INVALID',
      `model in ${dir} has ${actual.length} ${kind}s (${actual.map((a) => a.name).join(', ')}), ${CARD_JSON} lists ${cards.length}`,
      { details: { dir, kind, model: actual.map((a) => a.name), card: cards.map((c) => c.name) } },
    );
  }
  cards.forEach((card, i) => {
    const got = actual[i]!;
    if (got.name !== card.name) {
      throw new StreamscoreError(
        'MODEL_INVALID',
        `${kind} ${i} of the model in ${dir} is "${got.name}", ${CARD_JSON} calls it "${card.name}"`,
        { details: { dir, kind, tensor: card.name, modelName: got.name } },
      );
    }
    const same =
      got.shape !== undefined &&
      got.shape.length === card.shape.length &&
      got.shape.every((d, j) => d === card.shape[j]);
    if (!same) {
      const shown = got.shape === undefined ? 'unknown' : `[${got.shape.join(', ')}]`;
      throw new StreamscoreError(
        'MODEL_INVALID',
        `${kind} "${card.name}" of the model in ${dir} has shape ${shown}, ${CARD_JSON} says [${card.shape.join(', ')}]`,
        {
          details: {
            dir,
            kind,
            tensor: card.name,
            modelShape: got.shape ?? null,
            cardShape: card.shape,
          },
        },
      );
    }
  });
}

/** Tensor names and example shapes, as the model itself declares them, in order. */
function declaredTensors(tf: typeof tfjs, model: TfjsModel) {
  if (model instanceof tf.GraphModel) {
    // Signature names may carry a ":0" output-index suffix; the card uses the bare name.
    const strip = (n: string) => n.replace(/:0$/, '');
    return {
      inputs: model.inputs.map((t) => ({ name: strip(t.name), shape: exampleShape(t.shape) })),
      outputs: model.outputs.map((t) => ({ name: strip(t.name), shape: exampleShape(t.shape) })),
    };
  }
  return {
    inputs: model.inputs.map((t, i) => ({
      name: model.inputNames[i] ?? t.name,
      shape: exampleShape(t.shape),
    })),
    outputs: model.outputs.map((t, i) => ({
      name: model.outputNames[i] ?? t.name,
      shape: exampleShape(t.shape),
    })),
  };
}

/**
 * Load the model in `dir` (a version directory) onto the active backend and wrap it in a runner.
 * `MODEL_NOT_FOUND`: no card.json / model.json / listed file. `CHECKSUM_MISMATCH`: a file's
 * sha256 differs from the card. `MODEL_INVALID`: bad card, unreadable model, or a model whose
 * tensors disagree with the card.
 */
export async function loadModel(dir: string, options: LoadModelOptions): Promise<TfjsModelRunner> {
  const { tf, backend, log } = options;
  const started = performance.now();
  const card = await readModelCard(dir);
  const verified = await readVerified(dir, card);

  const handler = fileSystemLoader(dir, {
    readFile: async (file) => {
      const bytes = verified.get(path.posix.normalize(file));
      if (bytes === undefined) {
        throw new StreamscoreError(
          'MODEL_INVALID',
          `${MODEL_JSON} in ${dir} names ${file}, which ${CARD_JSON} does not list`,
          {
            details: { dir, file },
          },
        );
      }
      return bytes;
    },
  });

  let model: TfjsModel;
  try {
    model =
      card.format === 'tfjs-graph'
        ? await tf.loadGraphModel(handler)
        : await tf.loadLayersModel(handler);
  } catch (err) {
    if (err instanceof StreamscoreError) throw err;
    throw new StreamscoreError(
      'MODEL_INVALID',
      `cannot load ${card.format} model from ${dir}: ${err instanceof Error ? err.message : String(err)}`,
      { cause: err, details: { dir, format: card.format } },
    );
  }

  try {
    const declared = declaredTensors(tf, model);
    checkTensors(dir, 'input', card.inputs, declared.inputs);
    checkTensors(dir, 'output', card.outputs, declared.outputs);
    const labels = card.labels;
    const only = card.outputs.length === 1 ? card.outputs[0] : undefined;
    if (labels !== undefined && only !== undefined) {
      const classes = only.shape.reduce<number>((n, d) => n * (d ?? NaN), 1);
      if (classes !== labels.length) {
        throw new StreamscoreError(
          'MODEL_INVALID',
          `${CARD_JSON} in ${dir} has ${labels.length} labels for output "${only.name}" of ${classes} values`,
          { details: { dir, tensor: only.name, labels: labels.length } },
        );
      }
    }
  } catch (err) {
    model.dispose();
    throw err;
  }

  log.info(
    {
      model: card.name,
      version: card.version,
      backend,
      dir,
      files: Object.keys(card.files).length,
      ms: Math.round(performance.now() - started),
    },
    'model loaded',
  );
  return new TfjsModelRunner({ tf, model, card, backend });
}
