/**
 * `streamscore models list | inspect | verify`: read-only views of the model repository.
 *
 * Each command is a function that returns its exit code and writes through injected writers, so
 * tests run it in-process; `registerModelCommands` wires them into the commander program.
 * Exit codes: 0 success, 1 a model problem (not found, verification failed), 78 a configuration
 * error (as the rest of the CLI).
 *
 * `list` and `inspect` only read and validate `card.json`; `verify` loads every model the way the
 * worker does (`loadModel`: every file's sha256 against the card, then the model's tensor names
 * and shapes against the card) and disposes it again.
 */
import { stat } from 'node:fs/promises';
import path from 'node:path';
import { Command } from 'commander';
import { loadConfig } from '../config/index.js';
import { isStreamscoreError } from '../errors.js';
import { selectBackend, type SelectedBackend } from '../model/backend.js';
import type { ModelCard, TensorCard } from '../model/card.js';
import type { ReloadResult } from '../model/reloader.js';
import type { RolloutEvent } from '../model/rollout.js';
import {
  listModelNames,
  listModelVersions,
  loadModel,
  readModelCard,
  resolveModelDir,
} from '../model/repository.js';

/** Where a command writes, and the environment its configuration is read from. */
export interface ModelsIo {
  stdout: (text: string) => void;
  stderr: (text: string) => void;
  /** Defaults to `process.env` (STREAMSCORE_CONFIG, STREAMSCORE_MODEL_REPOSITORY, …). */
  env?: NodeJS.ProcessEnv;
}

export interface ModelsFlags {
  /** YAML or JSON configuration file (else STREAMSCORE_CONFIG). */
  config?: string;
  /** Repository folder; overrides `model.repository` from the configuration. */
  repository?: string;
  json?: boolean;
}

/** The process's own stdout and stderr: what the commands print to by default. */
export const processIo: ModelsIo = {
  stdout: (text) => process.stdout.write(text),
  stderr: (text) => process.stderr.write(text),
};

/** Exit code for a config error (EX_CONFIG), as `streamscore run` uses. */
export const EXIT_CONFIG = 78;

/** The configuration, loaded as every command does (defaults ← file ← env ← `--repository`). */
function configFrom(flags: ModelsFlags, io: ModelsIo) {
  return loadConfig({
    file: flags.config,
    env: io.env ?? process.env,
    overrides: flags.repository === undefined ? {} : { model: { repository: flags.repository } },
  });
}

const repositoryFrom = (flags: ModelsFlags, io: ModelsIo) =>
  path.resolve(configFrom(flags, io).model.repository);

/** Prints an error the way `main.ts` does and returns its exit code (78 for configuration). */
function failure(err: unknown, io: ModelsIo): number {
  if (isStreamscoreError(err)) {
    io.stderr(`streamscore: ${err.code}: ${err.message}\n`);
    return err.code.startsWith('CONFIG') ? EXIT_CONFIG : 1;
  }
  io.stderr(`streamscore: ${(err as Error)?.stack ?? String(err)}\n`);
  return 1;
}

/** One line, for a table cell or a verify line: newlines and their indentation become "; ". */
function oneLine(text: string): string {
  return text.replace(/\s*\n\s*/g, '; ').trim();
}

function reason(err: unknown): { code: string; message: string } {
  if (isStreamscoreError(err)) return { code: err.code, message: oneLine(err.message) };
  return { code: 'ERROR', message: oneLine(err instanceof Error ? err.message : String(err)) };
}

/** `pixels[64]`, `image[?,28,28,1]` (`?`: any size). */
function tensorText(tensors: readonly TensorCard[]): string {
  return tensors.map((t) => `${t.name}[${t.shape.map((d) => d ?? '?').join(',')}]`).join(' ');
}

function tensorJson(tensors: readonly TensorCard[]) {
  return tensors.map((t) => ({ name: t.name, dtype: t.dtype, shape: [...t.shape] }));
}

/** Left-aligned columns, two spaces apart; the last cell of a row is not padded. */
function table(rows: string[][]): string {
  const columns = Math.max(...rows.map((r) => r.length));
  const widths = Array.from({ length: columns }, (_, i) =>
    Math.max(...rows.map((r) => (i < r.length - 1 ? [...r[i]!].length : 0))),
  );
  return rows
    .map((r) =>
      r
        .map((cell, i) =>
          i === r.length - 1 ? cell : cell + ' '.repeat(widths[i]! - [...cell].length),
        )
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}

const DESCRIPTION_WIDTH = 60;
const truncate = (text: string, width: number) =>
  [...text].length <= width ? text : [...text].slice(0, width - 1).join('') + '…';

type ListedVersion =
  | {
      version: string;
      latest: boolean;
      dir: string;
      description: string;
      format: string;
      inputs: ReturnType<typeof tensorJson>;
      outputs: ReturnType<typeof tensorJson>;
      createdAt: string;
    }
  | {
      version: string;
      latest: boolean;
      dir: string;
      error: { code: string; message: string };
    };

/**
 * `models list`: every model and version with its card's summary. Exits 0 whenever the repository
 * can be read (an unreadable card is shown in its row; `verify` is the check).
 */
export async function modelsList(flags: ModelsFlags, io: ModelsIo = processIo): Promise<number> {
  try {
    const repository = repositoryFrom(flags, io);
    const models: { name: string; latest: string | null; versions: ListedVersion[] }[] = [];
    for (const name of await listModelNames(repository)) {
      const versions = await listModelVersions(repository, name);
      const latest = versions.at(-1) ?? null;
      const listed: ListedVersion[] = [];
      for (const version of versions) {
        const dir = path.join(repository, name, version);
        const base = { version, latest: version === latest, dir };
        try {
          const card = await readModelCard(dir);
          listed.push({
            ...base,
            description: card.description,
            format: card.format,
            inputs: tensorJson(card.inputs),
            outputs: tensorJson(card.outputs),
            createdAt: card.createdAt,
          });
        } catch (err) {
          listed.push({ ...base, error: reason(err) });
        }
      }
      models.push({ name, latest, versions: listed });
    }

    if (flags.json) {
      io.stdout(JSON.stringify({ repository, models }, null, 2) + '\n');
      return 0;
    }
    const rows = [['MODEL', 'VERSION', 'INPUTS', 'OUTPUTS', 'CREATED', 'DESCRIPTION']];
    for (const model of models) {
      if (model.versions.length === 0) rows.push([model.name, '-', '-', '-', '-', '(no versions)']);
      for (const v of model.versions) {
        const version = v.latest ? `${v.version} (latest)` : v.version;
        if ('error' in v) {
          rows.push([model.name, version, '-', '-', '-', `(card unreadable: ${v.error.code})`]);
        } else {
          rows.push([
            model.name,
            version,
            tensorText(v.inputs),
            tensorText(v.outputs),
            v.createdAt,
            truncate(v.description, DESCRIPTION_WIDTH),
          ]);
        }
      }
    }
    io.stdout(`repository: ${repository}\n`);
    io.stdout(models.length === 0 ? '(no models)\n' : table(rows) + '\n');
    return 0;
  } catch (err) {
    return failure(err, io);
  }
}

/** Each file the card lists, with its size on disk (`null`: missing) and the card's sha256. */
async function fileSizes(dir: string, card: ModelCard) {
  const files: { file: string; bytes: number | null; sha256: string }[] = [];
  for (const [file, sha256] of Object.entries(card.files)) {
    let bytes: number | null = null;
    try {
      const info = await stat(path.resolve(dir, file));
      if (info.isFile()) bytes = info.size;
    } catch {
      bytes = null; // missing: shown as such; `verify` reports it
    }
    files.push({ file, bytes, sha256 });
  }
  return files;
}

/** Card keys `inspect` prints in its own layout; any other key is printed generically. */
const LAID_OUT = new Set([
  'name',
  'version',
  'description',
  'format',
  'createdAt',
  'inputs',
  'outputs',
  'labels',
  'preprocessing',
  'training',
  'metrics',
  'files',
]);

function scalarText(value: unknown): string {
  return typeof value === 'string' ? value : JSON.stringify(value);
}

/** `key  value` lines, nested objects as indented sections (keys padded to `width`). */
function fields(
  entries: [string, unknown][],
  indent: string,
  width = Math.max(0, ...entries.map(([k]) => k.length)),
): string[] {
  const lines: string[] = [];
  for (const [key, value] of entries) {
    if (value !== null && typeof value === 'object' && !Array.isArray(value)) {
      lines.push(`${indent}${key}`);
      lines.push(...fields(Object.entries(value), indent + '  '));
    } else {
      const text = Array.isArray(value) ? value.map(scalarText).join(', ') : scalarText(value);
      lines.push(`${indent}${key.padEnd(width)}  ${oneLine(text)}`);
    }
  }
  return lines;
}

/** Inputs and outputs as one table under their headings. */
function tensorLines(card: ModelCard): string[] {
  const row = (t: TensorCard) => [
    `  ${t.name}`,
    t.dtype,
    `[${t.shape.map((d) => d ?? '?').join(', ')}]`,
    t.description ?? '',
  ];
  const rows = [['inputs'], ...card.inputs.map(row), ['outputs'], ...card.outputs.map(row)];
  return table(rows).split('\n');
}

/** Width of the top-level keys in `inspect` ("preprocessing"). */
const KEY_WIDTH = 13;

/** `models inspect <name> [version]`: the whole card, pretty-printed (or as JSON). */
export async function modelsInspect(
  name: string,
  version: string | undefined,
  flags: ModelsFlags,
  io: ModelsIo = processIo,
): Promise<number> {
  try {
    const repository = repositoryFrom(flags, io);
    const dir = await resolveModelDir(repository, name, version ?? 'latest');
    const latest = (await listModelVersions(repository, name)).at(-1) === path.basename(dir);
    const card = await readModelCard(dir);
    const files = await fileSizes(dir, card);
    if (flags.json) {
      io.stdout(JSON.stringify({ dir, latest, card, files }, null, 2) + '\n');
      return 0;
    }
    const top = (entries: [string, unknown][]) => fields(entries, '', KEY_WIDTH);
    const lines = [
      `${card.name} ${card.version}${latest ? ' (latest)' : ''}  ${dir}`,
      ...top([
        ['description', card.description],
        ['format', card.format],
        ['created', card.createdAt],
      ]),
      ...tensorLines(card),
      ...top(card.labels === undefined ? [] : [['labels', card.labels]]),
      ...top([
        ['preprocessing', card.preprocessing],
        ['training', card.training],
        ['metrics', card.metrics],
      ]),
      // Keys this layout does not know (added to the card schema later) still show.
      ...top(Object.entries(card).filter(([key]) => !LAID_OUT.has(key))),
      'files',
      ...table(
        files.map((f) => [
          `  ${f.file}`,
          f.bytes === null ? 'missing' : `${f.bytes.toLocaleString('en-US')} B`,
          `sha256 ${f.sha256}`,
        ]),
      ).split('\n'),
    ];
    io.stdout(lines.join('\n') + '\n');
    return 0;
  } catch (err) {
    return failure(err, io);
  }
}

export interface VerifyResult {
  name: string;
  version: string;
  dir: string;
  ok: boolean;
  error?: { code: string; message: string };
}

const quiet = { info: () => {}, debug: () => {}, warn: () => {} };

/**
 * `models verify [name] [version]`: load every version (of every model, of `name`, or just
 * `name` at `version`) as the worker would and dispose it. One line per version, `ok` or
 * `FAILED: <code>: <message naming the file or tensor>`; exit 0 when all are ok, else 1 (also
 * when the repository holds no model).
 */
export async function modelsVerify(
  name: string | undefined,
  version: string | undefined,
  flags: ModelsFlags,
  io: ModelsIo = processIo,
): Promise<number> {
  try {
    const config = configFrom(flags, io);
    const repository = path.resolve(config.model.repository);
    const targets: { name: string; version: string; dir: string; error?: unknown }[] = [];
    if (name !== undefined && version !== undefined) {
      const dir = await resolveModelDir(repository, name, version);
      targets.push({ name, version: path.basename(dir), dir });
    } else {
      const names = name === undefined ? await listModelNames(repository) : [name];
      for (const model of names) {
        const versions = await listModelVersions(repository, model);
        if (versions.length === 0) {
          // A model without versions fails as the worker would fail to serve it.
          const error = await resolveModelDir(repository, model, 'latest').catch((e: unknown) => e);
          targets.push({ name: model, version: '-', dir: path.join(repository, model), error });
        }
        for (const v of versions)
          targets.push({ name: model, version: v, dir: path.join(repository, model, v) });
      }
    }

    let selected: SelectedBackend | undefined;
    const results: VerifyResult[] = [];
    for (const target of targets) {
      const { error, ...where } = target;
      if (error !== undefined) {
        results.push({ ...where, ok: false, error: reason(error) });
        continue;
      }
      selected ??= await selectBackend(config.model.backend, quiet);
      try {
        const runner = await loadModel(where.dir, {
          tf: selected.tf,
          backend: selected.backend,
          log: quiet,
        });
        await runner.dispose();
        results.push({ ...where, ok: true });
      } catch (err) {
        results.push({ ...where, ok: false, error: reason(err) });
      }
    }

    if (flags.json) {
      io.stdout(JSON.stringify({ repository, results }, null, 2) + '\n');
    } else {
      const labels = results.map((r) => `${r.name} ${r.version}`);
      const width = Math.max(0, ...labels.map((l) => l.length));
      results.forEach((r, i) => {
        const status = r.ok ? 'ok' : `FAILED: ${r.error!.code}: ${r.error!.message}`;
        io.stdout(`${labels[i]!.padEnd(width)}  ${status}\n`);
      });
      if (results.length === 0) io.stderr(`streamscore: no models in ${repository}\n`);
    }
    // Nothing to verify is a failure too: the worker could serve nothing from here.
    return results.length > 0 && results.every((r) => r.ok) ? 0 : 1;
  } catch (err) {
    return failure(err, io);
  }
}

/** Default address of a local worker's HTTP server (http.port's default). */
export const DEFAULT_WORKER_URL = 'http://127.0.0.1:9464';

/**
 * POSTs (or GETs) to a running worker's HTTP server; null (after saying why) when it cannot be
 * reached.
 */
export async function askWorker(
  base: string | undefined,
  endpoint: string,
  io: Pick<ModelsIo, 'stderr'>,
  method: 'POST' | 'GET' = 'POST',
): Promise<{ url: string; status: number; body: Record<string, unknown> } | null> {
  const url = `${(base ?? DEFAULT_WORKER_URL).replace(/\/+$/, '')}${endpoint}`;
  try {
    const response = await fetch(url, { method });
    const text = await response.text();
    let body: Record<string, unknown>;
    try {
      body = JSON.parse(text) as Record<string, unknown>;
    } catch {
      body = { error: text.trim() };
    }
    return { url, status: response.status, body };
  } catch (err) {
    const cause = (err as { cause?: { message?: string } }).cause?.message;
    io.stderr(
      `streamscore: cannot reach the worker at ${url}: ${cause ?? (err as Error).message}\n`,
    );
    return null;
  }
}

/**
 * `models promote | rollback`: ends the trial of a running worker's candidate (model.canary) by
 * hand. Promote: the candidate serves every key; rollback: the stable version does. Exit 0 when
 * done, 1 when there is no candidate on trial or the worker could not be asked.
 */
export async function modelsEndTrial(
  action: 'promote' | 'rollback',
  flags: { url?: string; json?: boolean },
  io: ModelsIo,
): Promise<number> {
  const answer = await askWorker(flags.url, `/models/${action}`, io);
  if (!answer) return 1;
  const { url, status, body } = answer;
  if (flags.json) {
    io.stdout(JSON.stringify({ status, ...body }, null, 2) + '\n');
  } else if (status === 200) {
    const e = body as unknown as RolloutEvent;
    io.stdout(
      action === 'promote'
        ? `promoted: ${e.model} ${e.version} now serves every key (was ${e.stableVersion})\n`
        : `rolled back: ${e.model} ${e.version}; ${e.stableVersion} serves every key\n`,
    );
  } else {
    io.stderr(`streamscore: ${url} answered ${status}: ${String(body.error ?? '')}\n`);
  }
  return status === 200 ? 0 : 1;
}

/**
 * `models reload`: asks a running worker (POST <url>/models/reload) to look for a newer version
 * and hot-swap it in. Exit 0: swapped or unchanged; 1: refused, or the worker could not be asked.
 */
export async function modelsReload(
  flags: { url?: string; json?: boolean },
  io: ModelsIo,
): Promise<number> {
  const answer = await askWorker(flags.url, '/models/reload', io);
  if (!answer) return 1;
  const { url, status, body } = answer;
  if (flags.json) {
    io.stdout(JSON.stringify({ status, ...body }, null, 2) + '\n');
  } else if (typeof body.outcome === 'string') {
    const r = body as unknown as ReloadResult;
    const waiting = r.waiting?.length ? ` (waiting for card.json in ${r.waiting.join(', ')})` : '';
    if (r.outcome === 'swapped') {
      io.stdout(`swapped: ${r.model} ${r.previous} -> ${r.current} in ${r.ms} ms${waiting}\n`);
    } else if (r.outcome === 'unchanged') {
      io.stdout(`unchanged: ${r.model} ${r.current} is the latest complete version${waiting}\n`);
    } else {
      io.stdout(
        `refused: ${r.model} ${r.candidate}: ${r.error?.code}: ${oneLine(r.error?.message ?? '')}; ${r.current} keeps serving\n`,
      );
    }
  } else {
    io.stderr(`streamscore: ${url} answered ${status}: ${String(body.error ?? '')}\n`);
  }
  return status === 200 && body.outcome !== 'refused' ? 0 : 1;
}

/** Adds `models list | inspect | verify | reload | promote | rollback` to `program`; each sets `process.exitCode`. */
export function registerModelCommands(program: Command, io: ModelsIo = processIo): Command {
  const models = program
    .command('models')
    .description(
      'list, inspect and verify the models in the model repository; reload a running worker',
    );
  const common = (command: Command) =>
    command
      .option('-c, --config <file>', 'YAML or JSON configuration file (also STREAMSCORE_CONFIG)')
      .option(
        '-r, --repository <dir>',
        'model repository folder (default: model.repository, also STREAMSCORE_MODEL_REPOSITORY)',
      )
      .option('--json', 'print machine-readable JSON');

  common(models.command('list'))
    .description('every model and version: latest, inputs, outputs, created time, description')
    .action(async (flags: ModelsFlags) => {
      process.exitCode = await modelsList(flags, io);
    });

  common(models.command('inspect'))
    .argument('<name>', 'model name')
    .argument('[version]', 'version number or "latest"', 'latest')
    .description('print the whole model card, with each file’s size and sha256')
    .action(async (name: string, version: string, flags: ModelsFlags) => {
      process.exitCode = await modelsInspect(name, version, flags, io);
    });

  common(models.command('verify'))
    .argument('[name]', 'model name (default: every model)')
    .argument('[version]', 'version number or "latest" (default: every version)')
    .description(
      'load each version as the worker would: file checksums and the card against the model; exit 1 if any fails',
    )
    .action(async (name: string | undefined, version: string | undefined, flags: ModelsFlags) => {
      process.exitCode = await modelsVerify(name, version, flags, io);
    });

  models
    .command('reload')
    .description(
      'ask a running worker (POST /models/reload) to hot-swap in the newest version; prints the outcome',
    )
    .option('-u, --url <url>', "the worker's HTTP server", DEFAULT_WORKER_URL)
    .option('--json', 'print machine-readable JSON')
    .action(async (flags: { url?: string; json?: boolean }) => {
      process.exitCode = await modelsReload(flags, io);
    });

  for (const action of ['promote', 'rollback'] as const) {
    models
      .command(action)
      .description(
        action === 'promote'
          ? 'make the candidate on trial (model.canary) serve every key in a running worker (POST /models/promote)'
          : 'send every key back to the stable version in a running worker (POST /models/rollback)',
      )
      .option('-u, --url <url>', "the worker's HTTP server", DEFAULT_WORKER_URL)
      .option('--json', 'print machine-readable JSON')
      .action(async (flags: { url?: string; json?: boolean }) => {
        process.exitCode = await modelsEndTrial(action, flags, io);
      });
  }
  return models;
}
