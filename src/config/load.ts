import { readFileSync } from 'node:fs';
import { z } from 'zod';
import { parse as parseYaml } from 'yaml';
import { StreamscoreError } from '../errors.js';
import { configSchema, type StreamscoreConfig } from './schema.js';

export const ENV_PREFIX = 'STREAMSCORE_';

/** A leaf of the configuration: its dotted key, environment variable and schema. */
export interface ConfigKey {
  path: string[];
  key: string;
  env: string;
  schema: z.ZodType;
}

type Wrapper = z.ZodType & { unwrap?: () => z.ZodType; _zod: { def: { innerType?: z.ZodType } } };

/** Strips default/prefault/optional wrappers to reach the type that decides how env text parses. */
export function innerType(schema: z.ZodType): z.ZodType {
  let current = schema as Wrapper;
  while (current._zod.def.innerType) current = current._zod.def.innerType as Wrapper;
  return current;
}

const toEnvWord = (word: string) => word.replace(/([a-z0-9])([A-Z])/g, '$1_$2').toUpperCase();

/** Every leaf key of the schema, in declaration order (used for env overrides and the docs). */
export function configKeys(schema: z.ZodType = configSchema, path: string[] = []): ConfigKey[] {
  const inner = innerType(schema);
  if (inner instanceof z.ZodObject) {
    return Object.entries(inner.shape as Record<string, z.ZodType>).flatMap(([name, child]) =>
      configKeys(child, [...path, name]),
    );
  }
  return [
    {
      path,
      key: path.join('.'),
      env: ENV_PREFIX + path.map(toEnvWord).join('_'),
      schema,
    },
  ];
}

/** Environment text → the value the schema expects; what cannot convert is left for zod to reject. */
function fromEnvText(text: string, schema: z.ZodType): unknown {
  const inner = innerType(schema);
  if (inner instanceof z.ZodArray) {
    // A list of records (mappings) cannot be comma-separated text: it is JSON.
    if (innerType(inner.element as z.ZodType) instanceof z.ZodObject) return parseJsonText(text);
    return text
      .split(',')
      .map((part) => part.trim())
      .filter((part) => part.length > 0)
      .map((part) => fromEnvText(part, inner.element as z.ZodType));
  }
  if (inner instanceof z.ZodNumber) {
    const value = Number(text);
    return text.trim() !== '' && Number.isFinite(value) ? value : text;
  }
  if (inner instanceof z.ZodUnion) {
    // e.g. 'auto' | number: numeric text becomes the number, anything else stays text.
    const hasNumber = (inner.options as z.ZodType[]).some(
      (o) => innerType(o) instanceof z.ZodNumber,
    );
    const value = Number(text);
    return hasNumber && /^\s*-?\d+(\.\d+)?\s*$/.test(text) ? value : text;
  }
  if (inner instanceof z.ZodBoolean) {
    if (/^(true|1|yes)$/i.test(text)) return true;
    if (/^(false|0|no)$/i.test(text)) return false;
    return text;
  }
  return text;
}

function parseJsonText(text: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return text; // zod then names the key and what it expected
  }
}

function setPath(target: Record<string, unknown>, path: string[], value: unknown): void {
  let node = target;
  for (const part of path.slice(0, -1)) {
    const next = node[part];
    if (typeof next !== 'object' || next === null || Array.isArray(next)) node[part] = {};
    node = node[part] as Record<string, unknown>;
  }
  node[path[path.length - 1]!] = value;
}

export interface LoadConfigOptions {
  /** Path of a YAML or JSON file; STREAMSCORE_CONFIG names one when this is absent. */
  file?: string;
  env?: NodeJS.ProcessEnv;
  /** Values applied over the file and under the environment (e.g. from CLI flags). */
  overrides?: Record<string, unknown>;
}

function readConfigFile(file: string): Record<string, unknown> {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new StreamscoreError(
      'CONFIG_FILE_UNREADABLE',
      `Cannot read the configuration file ${file}: ${(err as Error).message}. Fix: pass an existing file with --config or STREAMSCORE_CONFIG.`,
      { cause: err, details: { file } },
    );
  }
  let parsed: unknown;
  try {
    parsed = parseYaml(text) ?? {};
  } catch (err) {
    throw new StreamscoreError(
      'CONFIG_INVALID',
      `The configuration file ${file} is not valid YAML/JSON: ${(err as Error).message}`,
      { cause: err, details: { file } },
    );
  }
  if (typeof parsed !== 'object' || Array.isArray(parsed)) {
    throw new StreamscoreError(
      'CONFIG_INVALID',
      `The configuration file ${file} must hold a mapping of sections (kafka, topics, model, ...).`,
      { details: { file } },
    );
  }
  return parsed as Record<string, unknown>;
}

/**
 * Defaults ← file ← STREAMSCORE_* environment ← overrides (command-line flags). Fails with one error listing every
 * wrong key, where its value came from, and how to fix it.
 */
export function loadConfig(options: LoadConfigOptions = {}): StreamscoreConfig {
  const env = options.env ?? process.env;
  const file = options.file ?? env.STREAMSCORE_CONFIG;
  const raw: Record<string, unknown> = file ? readConfigFile(file) : {};
  const origin = new Map<string, string>();
  const keys = configKeys();

  rejectUnknownVariables(env, keys);
  for (const key of keys) {
    const text = env[key.env];
    if (text === undefined) continue;
    setPath(raw, key.path, fromEnvText(text, key.schema));
    origin.set(key.key, `${key.env}=${JSON.stringify(text)}`);
  }
  for (const [key, value] of Object.entries(flatten(options.overrides ?? {}))) {
    setPath(raw, key.split('.'), value);
    origin.set(key, 'command line');
  }

  const result = configSchema.safeParse(raw);
  if (result.success) return result.data;
  throw configError(result.error, origin, file, keys);
}

/** STREAMSCORE_* variables that are not configuration keys but are read elsewhere. */
const OTHER_VARIABLES = new Set([
  'STREAMSCORE_CONFIG',
  'STREAMSCORE_TEST_BROKERS',
  'STREAMSCORE_TEST_REGISTRY',
]);

/** A mistyped variable would otherwise leave its default silently in place. */
function rejectUnknownVariables(env: NodeJS.ProcessEnv, keys: ConfigKey[]): void {
  const known = new Set(keys.map((k) => k.env));
  const unknown = Object.keys(env).filter(
    (name) => name.startsWith(ENV_PREFIX) && !known.has(name) && !OTHER_VARIABLES.has(name),
  );
  if (unknown.length === 0) return;
  const lines = unknown.map((name) => {
    const near = closest(name, [...known]);
    return `  - ${name}: not a configuration variable. Fix: ${near ? `did you mean ${near}? ` : ''}unset it or use one listed in config/README.md`;
  });
  throw new StreamscoreError('CONFIG_INVALID', 'Invalid configuration:\n' + lines.join('\n'), {
    details: { keys: unknown },
  });
}

/** The candidate within a small edit distance, if any (for "did you mean"). */
function closest(word: string, candidates: string[]): string | undefined {
  let best: string | undefined;
  let bestDistance = Math.max(3, Math.floor(word.length / 5));
  for (const candidate of candidates) {
    const distance = editDistance(word, candidate);
    if (distance <= bestDistance) {
      best = candidate;
      bestDistance = distance;
    }
  }
  return best;
}

function editDistance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const current = [i];
    for (let j = 1; j <= b.length; j++) {
      current[j] = Math.min(
        previous[j]! + 1,
        current[j - 1]! + 1,
        previous[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1),
      );
    }
    previous = current;
  }
  return previous[b.length]!;
}

function flatten(value: Record<string, unknown>, prefix = ''): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [name, child] of Object.entries(value)) {
    const key = prefix ? `${prefix}.${name}` : name;
    if (typeof child === 'object' && child !== null && !Array.isArray(child)) {
      Object.assign(out, flatten(child as Record<string, unknown>, key));
    } else if (child !== undefined) {
      out[key] = child;
    }
  }
  return out;
}

function configError(
  error: z.ZodError,
  origin: Map<string, string>,
  file: string | undefined,
  keys: ConfigKey[],
): StreamscoreError {
  const problems = error.issues.map((issue) => {
    const numericTail = issue.path.length > 0 && typeof issue.path.at(-1) === 'number';
    const keyPath = (numericTail ? issue.path.slice(0, -1) : issue.path).map(String);
    if (issue.code === 'unrecognized_keys') {
      const section = keyPath.join('.');
      const known = keys
        .filter((k) => k.path.slice(0, -1).join('.') === section)
        .map((k) => k.path.at(-1));
      const sectionKeys = section ? known : [...new Set(keys.map((k) => k.path[0]))];
      return {
        key: issue.keys.map((k) => (section ? `${section}.${k}` : k)).join(', '),
        text: `unknown key. Fix: remove it or use one of: ${sectionKeys.join(', ')}`,
      };
    }
    const key = keyPath.join('.');
    const leaf = keys.find((k) => k.key === key);
    const from = origin.get(key) ?? (file ? `file ${file}` : 'defaults');
    const hint = leaf
      ? ` Fix: give ${key} a valid value in the config file or in ${leaf.env}${leaf.schema.description ? ` (${leaf.schema.description})` : ''}.`
      : '';
    return { key, text: `${issue.message} (from ${from}).${hint}` };
  });
  const message =
    'Invalid configuration:\n' + problems.map((p) => `  - ${p.key}: ${p.text}`).join('\n');
  return new StreamscoreError('CONFIG_INVALID', message, {
    details: { keys: problems.map((p) => p.key) },
  });
}

/** The worker cannot run without brokers; the demo supplies a local one instead. */
export function requireBrokers(config: StreamscoreConfig): void {
  if (config.kafka.brokers.length === 0) {
    throw new StreamscoreError(
      'CONFIG_INVALID',
      'Invalid configuration:\n  - kafka.brokers: no brokers configured. Fix: set STREAMSCORE_KAFKA_BROKERS=host:port[,host:port] or kafka.brokers in the config file (for a local broker: npm run kafka -- start).',
      { details: { keys: ['kafka.brokers'] } },
    );
  }
}
