/**
 * A real Jaeger v2 all-in-one (OTLP receiver, in-memory storage, query API, loopback only) for the
 * tracing tests, for CI and for looking at a worker's traces during development.
 *
 * No registry ships a Jaeger binary, so it is built from source with the machine's Go toolchain:
 * the module comes from the Go module proxy at the version pinned in jaeger/build.json, and the
 * binary lands in `.cache/jaeger/<jaegerVersion>/bin/jaeger` (built once; a marker records it).
 * Jaeger v2 is published under the module path without `/v2`, on its v1.x tags: module v1.76.0 is
 * Jaeger v2.13.0. `go install module@version` refuses it (its go.mod has a replace directive), so
 * the module is downloaded, copied and built as the main module.
 *
 * A source build has no Jaeger UI (release builds embed it; the module only has a placeholder
 * page): use the query API, `getTrace()` / `findTraces()` below, or scripts/trace-picture.ts.
 *
 * Not for production: no security, and traces live in memory until the process stops.
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { chmod, cp, mkdir, readFile, readdir, rename, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import {
  findPackageRoot,
  freePorts,
  LOG_TAIL_LINES,
  pollUntilReady,
  pruneDeadOwners,
  silent,
  spawnSupervised,
  type Log,
} from '../util/local-process.js';

const execFileAsync = promisify(execFile);

const MARKER = '.complete.json';
const READY_TIMEOUT_MS = 30_000;
const STOP_GRACE_MS = 10_000;
/** Cold builds take minutes on two cores; a hung toolchain still fails in the end. */
const BUILD_TIMEOUT_MS = 45 * 60_000;

export class LocalJaegerError extends Error {
  readonly details: Record<string, unknown>;
  constructor(message: string, details: Record<string, unknown> = {}, cause?: unknown) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = 'LocalJaegerError';
    this.details = details;
  }
}

/** jaeger/build.json: what to build. */
export interface JaegerBuildSpec {
  /** Go module path, `github.com/jaegertracing/jaeger`. */
  module: string;
  /** The module version on the Go module proxy (a v1.x tag: Jaeger v2 has no `/v2` module). */
  moduleVersion: string;
  /** The Jaeger release that module version is, e.g. `v2.13.0`: names the cache folder. */
  jaegerVersion: string;
  /** The main package inside the module, `./cmd/jaeger`. */
  package: string;
}

export interface EnsureJaegerOptions {
  /** Where `bin/jaeger` goes. Default: `<repo>/.cache/jaeger/<jaegerVersion>`. */
  cacheDir?: string;
  log?: Log;
}

export interface LocalJaegerOptions {
  /** OTLP/HTTP receiver port on 127.0.0.1. Default: a free port. */
  otlpHttpPort?: number;
  /** OTLP/gRPC receiver port on 127.0.0.1. Default: a free port. */
  otlpGrpcPort?: number;
  /** Query HTTP port (API v3, classic API, UI placeholder) on 127.0.0.1. Default: a free port. */
  queryPort?: number;
  /** Query gRPC port on 127.0.0.1. Default: a free port. */
  queryGrpcPort?: number;
  /** A fresh directory for config and log. Default: `<repo>/.cache/jaeger/run-<timestamp>-<pid>-<n>`. */
  runDir?: string;
  /** Jaeger's own log level (debug, info, warn, error). Default: info. */
  logLevel?: string;
  log?: Log;
}

export interface LocalJaeger {
  /** Base URL for OTLP/HTTP exporters: traces go to `<otlpHttpEndpoint>/v1/traces`. */
  otlpHttpEndpoint: string;
  /** OTLP/gRPC receiver, `127.0.0.1:<port>` (no scheme). */
  otlpGrpcEndpoint: string;
  /** Base URL of the query service: `/api/v3/traces/<id>`, `/api/traces/<id>`, `/api/services`. */
  queryUrl: string;
  /** Where the config and Jaeger's log (`jaeger.log`) are. */
  runDir: string;
  logFile: string;
  pid: number;
  /** Resolves with the exit code (or null when killed by a signal) once Jaeger has exited. */
  exited: Promise<number | null>;
  /** SIGTERM, then SIGKILL after 10 s. Safe to call more than once, also concurrently. */
  stop(): Promise<void>;
}

/** The package root: the nearest folder above this module holding jaeger/build.json. */
function findRoot(): string {
  const root = findPackageRoot(import.meta.url, path.join('jaeger', 'build.json'));
  if (root === null) {
    throw new LocalJaegerError(
      'cannot find jaeger/build.json above ' + fileURLToPath(import.meta.url),
    );
  }
  return root;
}

async function readSpec(root: string): Promise<{ spec: JaegerBuildSpec; sha256: string }> {
  const file = path.join(root, 'jaeger', 'build.json');
  const text = await readFile(file, 'utf8');
  const spec = JSON.parse(text) as Partial<JaegerBuildSpec>;
  for (const key of ['module', 'moduleVersion', 'jaegerVersion', 'package'] as const) {
    if (typeof spec[key] !== 'string' || spec[key] === '') {
      throw new LocalJaegerError(`jaeger/build.json has no "${key}"`, { file });
    }
  }
  return {
    spec: spec as JaegerBuildSpec,
    sha256: createHash('sha256').update(text).digest('hex'),
  };
}

/** `$GO`, else `go` on PATH, else the usual install location. */
function goCommand(): string {
  const fromEnv = process.env['GO'];
  if (fromEnv !== undefined && fromEnv !== '') return fromEnv;
  const onPath = (process.env['PATH'] ?? '')
    .split(path.delimiter)
    .some((dir) => dir !== '' && existsSync(path.join(dir, 'go')));
  if (!onPath && existsSync('/usr/local/go/bin/go')) return '/usr/local/go/bin/go';
  return 'go';
}

interface Marker {
  specSha256: string;
  jaegerVersion: string;
  goVersion: string;
  builtAt: string;
  buildSeconds: number;
  bytes: number;
}

async function readMarker(file: string): Promise<Marker | undefined> {
  try {
    return JSON.parse(await readFile(file, 'utf8')) as Marker;
  } catch {
    return undefined; // missing or torn: build again
  }
}

async function run(
  command: string,
  args: string[],
  opts: { cwd?: string; env?: NodeJS.ProcessEnv; timeout?: number } = {},
): Promise<string> {
  try {
    const { stdout } = await execFileAsync(command, args, {
      ...opts,
      maxBuffer: 64 * 1024 * 1024,
    });
    return stdout;
  } catch (err) {
    const output = err as { stdout?: string; stderr?: string };
    const text = `${output.stderr ?? ''}${output.stdout ?? ''}`
      .trim()
      .split('\n')
      .slice(-LOG_TAIL_LINES)
      .join('\n');
    throw new LocalJaegerError(
      `${command} ${args.join(' ')} failed: ${text || String(err)}`,
      { command, args },
      err,
    );
  }
}

/**
 * Builds the Jaeger binary once; later calls only check the marker. Returns the binary's path.
 * Needs Go (1.24.6+; `$GO` or `go` on PATH) and the Go module proxy; a cold build takes minutes.
 */
export async function ensureJaeger(opts: EnsureJaegerOptions = {}): Promise<string> {
  const log = opts.log ?? silent;
  const root = findRoot();
  const { spec, sha256 } = await readSpec(root);
  const cacheDir = path.resolve(
    opts.cacheDir ?? path.join(root, '.cache', 'jaeger', spec.jaegerVersion),
  );
  const binDir = path.join(cacheDir, 'bin');
  const binary = path.join(binDir, 'jaeger');

  // The marker is written last, so its presence means the build finished; the spec hash catches
  // a changed pin, and the binary check catches files deleted by hand.
  const marker = await readMarker(path.join(binDir, MARKER));
  if (marker?.specSha256 === sha256 && existsSync(binary)) return binary;

  const go = goCommand();
  // GOTOOLCHAIN=local: never download another toolchain (only the module proxy is reachable);
  // GOFLAGS=-mod=mod lets go fill in a go.sum line the module might lack.
  const env: NodeJS.ProcessEnv = { ...process.env, GOTOOLCHAIN: 'local', GOFLAGS: '-mod=mod' };
  let goVersion: string;
  try {
    goVersion = (await run(go, ['env', 'GOVERSION'], { env })).trim();
  } catch (err) {
    throw new LocalJaegerError(
      `Jaeger is built from source and needs Go 1.24.6 or newer (\`go\` on PATH, or GO=/path/to/go): ${(err as Error).message}`,
      { go },
      err,
    );
  }
  log(
    `building Jaeger ${spec.jaegerVersion} (${spec.module}@${spec.moduleVersion}) with ${goVersion} into ${binDir}; a cold build takes minutes`,
  );
  const started = Date.now();

  // Build next to the target and rename it into place, so an interrupted build never leaves a
  // half-written binary behind a marker.
  const staging = path.join(cacheDir, `build.tmp-${process.pid}`);
  await pruneDeadOwners(cacheDir, /^build\.tmp-(\d+)$/);
  await rm(staging, { recursive: true, force: true });
  await mkdir(staging, { recursive: true });
  try {
    const download = JSON.parse(
      await run(go, ['mod', 'download', '-json', `${spec.module}@${spec.moduleVersion}`], {
        env,
        cwd: staging,
        timeout: BUILD_TIMEOUT_MS,
      }),
    ) as { Dir?: string; Error?: string };
    if (download.Dir === undefined) {
      throw new LocalJaegerError(
        `go mod download ${spec.module}@${spec.moduleVersion}: ${download.Error ?? 'no Dir'}`,
      );
    }
    // The module cache is read-only; build a writable copy as the main module, so the module's
    // own replace directives apply.
    const src = path.join(staging, 'src');
    await cp(download.Dir, src, { recursive: true });
    await makeWritable(src);
    const stagedBinary = path.join(staging, 'bin', 'jaeger');
    await run(
      go,
      [
        'build',
        '-trimpath',
        '-ldflags',
        // -s -w: no symbol table or DWARF (a third smaller); the version shows in `jaeger version`.
        `-s -w -X ${spec.module}/internal/version.latestVersion=${spec.jaegerVersion}`,
        '-o',
        stagedBinary,
        spec.package,
      ],
      { env, cwd: src, timeout: BUILD_TIMEOUT_MS },
    );
    const buildSeconds = Math.round((Date.now() - started) / 100) / 10;
    const { size } = await stat(stagedBinary);
    await writeFile(
      path.join(staging, 'bin', MARKER),
      JSON.stringify(
        {
          specSha256: sha256,
          jaegerVersion: spec.jaegerVersion,
          goVersion,
          builtAt: new Date().toISOString(),
          buildSeconds,
          bytes: size,
        } satisfies Marker,
        null,
        2,
      ),
    );
    await rm(binDir, { recursive: true, force: true });
    await rename(path.join(staging, 'bin'), binDir);
    log(`built ${binary} (${(size / 2 ** 20).toFixed(0)} MiB) in ${buildSeconds} s`);
    return binary;
  } finally {
    await rm(staging, { recursive: true, force: true });
  }
}

async function makeWritable(dir: string): Promise<void> {
  await chmod(dir, 0o755);
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) await makeWritable(full);
    else await chmod(full, 0o644);
  }
}

/** Fills the `${env:NAME:-default}` placeholders of jaeger/config.yaml from `values`. */
function renderConfig(template: string, values: Record<string, string>): string {
  return template.replace(/\$\{env:([A-Z0-9_]+)(?::-([^}]*))?\}/g, (whole, name: string, def) => {
    const value = values[name] ?? (def as string | undefined);
    if (value === undefined)
      throw new LocalJaegerError(`jaeger/config.yaml: no value for ${whole}`);
    return value;
  });
}

let runCounter = 0;

/**
 * Builds Jaeger if needed, starts it on free loopback ports, and resolves once both the query API
 * and the OTLP/HTTP receiver answer. The process is killed when Node exits without stop().
 */
export async function startLocalJaeger(opts: LocalJaegerOptions = {}): Promise<LocalJaeger> {
  const log = opts.log ?? silent;
  const root = findRoot();
  const binary = await ensureJaeger({ log });
  const cacheRoot = path.join(root, '.cache', 'jaeger');
  if (opts.runDir === undefined) await pruneDeadOwners(cacheRoot, /^run-\d+-(\d+)-\d+$/);
  const runDir = path.resolve(
    opts.runDir ?? path.join(cacheRoot, `run-${Date.now()}-${process.pid}-${runCounter++}`),
  );
  const logFile = path.join(runDir, 'jaeger.log');
  const configFile = path.join(runDir, 'config.yaml');

  const free = await freePorts(4, (message) => new LocalJaegerError(message));
  const pick = (given: number | undefined, i: number): number => given ?? free[i]!;
  const otlpHttpPort = pick(opts.otlpHttpPort, 0);
  const otlpGrpcPort = pick(opts.otlpGrpcPort, 1);
  const queryPort = pick(opts.queryPort, 2);
  const queryGrpcPort = pick(opts.queryGrpcPort, 3);

  const template = await readFile(path.join(root, 'jaeger', 'config.yaml'), 'utf8');
  await mkdir(runDir, { recursive: true });
  await writeFile(
    configFile,
    renderConfig(template, {
      JAEGER_OTLP_HTTP: `127.0.0.1:${otlpHttpPort}`,
      JAEGER_OTLP_GRPC: `127.0.0.1:${otlpGrpcPort}`,
      JAEGER_QUERY_HTTP: `127.0.0.1:${queryPort}`,
      JAEGER_QUERY_GRPC: `127.0.0.1:${queryGrpcPort}`,
      JAEGER_LOG_LEVEL: opts.logLevel ?? 'info',
    }),
  );

  const spawnedAt = Date.now();
  // Never leave Jaeger holding ports behind when Node exits without calling stop().
  const jaeger = await spawnSupervised(binary, ['--config', configFile], {
    cwd: runDir,
    logFile,
    name: 'Jaeger',
    graceMs: STOP_GRACE_MS,
    log,
  });

  const otlpHttpEndpoint = `http://127.0.0.1:${otlpHttpPort}`;
  const queryUrl = `http://127.0.0.1:${queryPort}`;
  try {
    await waitUntilReady(otlpHttpEndpoint, queryUrl, jaeger.hasExited, logFile);
  } catch (err) {
    await jaeger.kill();
    throw err;
  }
  log(
    `Jaeger ready in ${((Date.now() - spawnedAt) / 1000).toFixed(1)} s: OTLP/HTTP ${otlpHttpEndpoint}, query ${queryUrl} (pid ${jaeger.pid}, log ${logFile})`,
  );
  return {
    otlpHttpEndpoint,
    otlpGrpcEndpoint: `127.0.0.1:${otlpGrpcPort}`,
    queryUrl,
    runDir,
    logFile,
    pid: jaeger.pid!,
    exited: jaeger.exited,
    stop: jaeger.stop,
  };
}

/**
 * Ready when the query API lists services and the OTLP/HTTP receiver accepts an empty export (the
 * collector starts extensions before receivers, so the query port alone says too little).
 */
async function waitUntilReady(
  otlpHttpEndpoint: string,
  queryUrl: string,
  hasExited: () => boolean,
  logFile: string,
): Promise<void> {
  await pollUntilReady({
    name: 'Jaeger',
    probe: async () => {
      // A throw (not listening yet) is kept as the last error.
      const services = await fetch(`${queryUrl}/api/v3/services`, {
        signal: AbortSignal.timeout(2_000),
      });
      await services.body?.cancel();
      const otlp = await fetch(`${otlpHttpEndpoint}/v1/traces`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: '{"resourceSpans":[]}',
        signal: AbortSignal.timeout(2_000),
      });
      await otlp.body?.cancel();
      if (services.ok && otlp.ok) return true;
      throw new Error(`query ${services.status}, OTLP ${otlp.status}`);
    },
    hasExited,
    logFile,
    timeoutMs: READY_TIMEOUT_MS,
    intervalMs: 100,
    makeError: (message, details, cause) => new LocalJaegerError(message, details, cause),
  });
}

// ---------------------------------------------------------------------------------------------
// Query helpers: Jaeger's API v3 (HTTP/JSON), whose trace responses are OTLP JSON, so span links,
// link attributes, span kinds and resources come back as the SDK exported them (the classic
// /api/traces turns links into FOLLOWS_FROM references and drops their attributes).
// ---------------------------------------------------------------------------------------------

export type AttributeValue =
  | string
  | number
  | boolean
  | null
  | AttributeValue[]
  | { [key: string]: AttributeValue };
export type Attributes = Record<string, AttributeValue>;

export interface TraceLink {
  traceId: string;
  spanId: string;
  traceState: string;
  attributes: Attributes;
}

export interface TraceEvent {
  name: string;
  /** Milliseconds since the epoch (fractional). */
  timeMs: number;
  attributes: Attributes;
}

export interface TraceSpan {
  /** 32 lower-case hex digits. */
  traceId: string;
  /** 16 lower-case hex digits. */
  spanId: string;
  /** The parent span's id; undefined for a root span. May name a span of another process. */
  parentSpanId: string | undefined;
  traceState: string;
  name: string;
  /** OTLP span kind without the prefix: INTERNAL, SERVER, CLIENT, PRODUCER, CONSUMER, UNSPECIFIED. */
  kind: string;
  /** Milliseconds since the epoch (fractional). */
  startMs: number;
  endMs: number;
  durationMs: number;
  attributes: Attributes;
  events: TraceEvent[];
  links: TraceLink[];
  /** UNSET, OK or ERROR, and the status message if any. */
  status: { code: string; message: string };
  /** The resource's `service.name`. */
  serviceName: string;
  resource: Attributes;
  scope: { name: string; version: string };
}

export interface Trace {
  traceId: string;
  /** In start order. */
  spans: TraceSpan[];
}

// --- OTLP JSON as Jaeger's API v3 writes it (ids in hex, 64-bit integers as strings) ---
interface OtlpKeyValue {
  key: string;
  value?: OtlpAnyValue;
}
interface OtlpAnyValue {
  stringValue?: string;
  boolValue?: boolean;
  intValue?: string | number;
  doubleValue?: number;
  arrayValue?: { values?: OtlpAnyValue[] };
  kvlistValue?: { values?: OtlpKeyValue[] };
  bytesValue?: string;
}
interface OtlpSpan {
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  traceState?: string;
  name?: string;
  kind?: string | number;
  startTimeUnixNano?: string | number;
  endTimeUnixNano?: string | number;
  attributes?: OtlpKeyValue[];
  events?: { name?: string; timeUnixNano?: string | number; attributes?: OtlpKeyValue[] }[];
  links?: { traceId: string; spanId: string; traceState?: string; attributes?: OtlpKeyValue[] }[];
  status?: { code?: string | number; message?: string };
}
interface OtlpTracesData {
  resourceSpans?: {
    resource?: { attributes?: OtlpKeyValue[] };
    scopeSpans?: { scope?: { name?: string; version?: string }; spans?: OtlpSpan[] }[];
  }[];
}

const SPAN_KINDS = ['UNSPECIFIED', 'INTERNAL', 'SERVER', 'CLIENT', 'PRODUCER', 'CONSUMER'];
const STATUS_CODES = ['UNSET', 'OK', 'ERROR'];

/** OTLP JSON ids are hex; a protobuf-JSON writer would give base64. Either way: lower-case hex. */
function hexId(id: string | undefined, bytes: number): string | undefined {
  if (id === undefined || id === '') return undefined;
  if (id.length === bytes * 2 && /^[0-9a-fA-F]+$/.test(id)) return id.toLowerCase();
  const hex = Buffer.from(id, 'base64').toString('hex');
  return /^0+$/.test(hex) ? undefined : hex;
}

function anyValue(value: OtlpAnyValue | undefined): AttributeValue {
  if (value === undefined) return null;
  if (value.stringValue !== undefined) return value.stringValue;
  if (value.boolValue !== undefined) return value.boolValue;
  if (value.intValue !== undefined) return Number(value.intValue);
  if (value.doubleValue !== undefined) return Number(value.doubleValue);
  if (value.arrayValue !== undefined) return (value.arrayValue.values ?? []).map(anyValue);
  if (value.kvlistValue !== undefined) return attributes(value.kvlistValue.values);
  if (value.bytesValue !== undefined) return value.bytesValue;
  return null;
}

function attributes(list: OtlpKeyValue[] | undefined): Attributes {
  const out: Attributes = {};
  for (const kv of list ?? []) out[kv.key] = anyValue(kv.value);
  return out;
}

function enumName(value: string | number | undefined, names: string[], prefix: string): string {
  if (typeof value === 'number') return names[value] ?? String(value);
  if (value === undefined || value === '') return names[0]!;
  return value.startsWith(prefix) ? value.slice(prefix.length) : value;
}

const nanosToMs = (nanos: string | number | undefined): number =>
  nanos === undefined ? 0 : Number(BigInt(nanos) / 1000n) / 1000;

/** Flattens OTLP JSON (`{ resourceSpans: [...] }`) into spans, grouped by trace, in start order. */
export function tracesFromOtlpJson(data: OtlpTracesData): Trace[] {
  const byTrace = new Map<string, TraceSpan[]>();
  for (const rs of data.resourceSpans ?? []) {
    const resource = attributes(rs.resource?.attributes);
    const serviceName =
      typeof resource['service.name'] === 'string' ? resource['service.name'] : '';
    for (const ss of rs.scopeSpans ?? []) {
      const scope = { name: ss.scope?.name ?? '', version: ss.scope?.version ?? '' };
      for (const s of ss.spans ?? []) {
        const traceId = hexId(s.traceId, 16) ?? '';
        const startMs = nanosToMs(s.startTimeUnixNano);
        const endMs = nanosToMs(s.endTimeUnixNano);
        const span: TraceSpan = {
          traceId,
          spanId: hexId(s.spanId, 8) ?? '',
          parentSpanId: hexId(s.parentSpanId, 8),
          traceState: s.traceState ?? '',
          name: s.name ?? '',
          kind: enumName(s.kind, SPAN_KINDS, 'SPAN_KIND_'),
          startMs,
          endMs,
          durationMs: endMs - startMs,
          attributes: attributes(s.attributes),
          events: (s.events ?? []).map((e) => ({
            name: e.name ?? '',
            timeMs: nanosToMs(e.timeUnixNano),
            attributes: attributes(e.attributes),
          })),
          links: (s.links ?? []).map((l) => ({
            traceId: hexId(l.traceId, 16) ?? '',
            spanId: hexId(l.spanId, 8) ?? '',
            traceState: l.traceState ?? '',
            attributes: attributes(l.attributes),
          })),
          status: {
            code: enumName(s.status?.code, STATUS_CODES, 'STATUS_CODE_'),
            message: s.status?.message ?? '',
          },
          serviceName,
          resource,
          scope,
        };
        const spans = byTrace.get(traceId) ?? [];
        spans.push(span);
        byTrace.set(traceId, spans);
      }
    }
  }
  return [...byTrace].map(([traceId, spans]) => ({
    traceId,
    spans: spans.sort((a, b) => a.startMs - b.startMs),
  }));
}

async function queryV3(url: string): Promise<OtlpTracesData | undefined> {
  const response = await fetch(url, { signal: AbortSignal.timeout(10_000) });
  const text = await response.text();
  if (response.status === 404) return undefined; // "trace not found" / "No traces found"
  if (!response.ok) {
    throw new LocalJaegerError(`GET ${url}: HTTP ${response.status}: ${text.slice(0, 500)}`, {
      url,
    });
  }
  return (JSON.parse(text) as { result?: OtlpTracesData }).result ?? {};
}

export interface WaitOptions {
  /** Keep asking until the trace has at least this many spans. Default: 1. */
  minSpans?: number;
  /** Give up after this long and return what there is (possibly undefined). Default: 0, ask once. */
  timeoutMs?: number;
  /**
   * Let Jaeger adjust the spans as its UI shows them (clock skew; an `@jaeger@warnings` attribute
   * where a parent is missing). Default: false, spans exactly as exported (`raw_traces=true`).
   */
  adjusted?: boolean;
}

/**
 * One trace by id (`GET /api/v3/traces/<traceId>`), or undefined if Jaeger has none of its spans.
 * With `timeoutMs`, polls until `minSpans` spans are there: spans of one trace arrive in several
 * exports.
 */
export async function getTrace(
  queryUrl: string,
  traceId: string,
  opts: WaitOptions = {},
): Promise<Trace | undefined> {
  const raw = opts.adjusted === true ? '' : '?raw_traces=true';
  const url = `${queryUrl}/api/v3/traces/${traceId.toLowerCase()}${raw}`;
  return poll(opts, async () => {
    const data = await queryV3(url);
    return data === undefined ? undefined : tracesFromOtlpJson(data)[0];
  });
}

export interface FindTracesOptions extends WaitOptions {
  /** Only traces with a span of this name (in `service`). */
  operation?: string;
  /** How far back from now to search. Default: 1 hour. */
  lookbackMs?: number;
  /** At most this many traces. Default: 100. */
  limit?: number;
}

/**
 * The recent traces that have spans of `service` (`GET /api/v3/traces?query.service_name=...`),
 * each with all its spans (those of other services too). `minSpans` counts over all traces found.
 */
export async function findTraces(
  queryUrl: string,
  service: string,
  opts: FindTracesOptions = {},
): Promise<Trace[]> {
  const found = await poll(
    opts,
    async () => {
      const now = Date.now();
      const params = new URLSearchParams({
        'query.service_name': service,
        'query.start_time_min': new Date(now - (opts.lookbackMs ?? 3_600_000)).toISOString(),
        // Spans stamped slightly ahead of this clock still count.
        'query.start_time_max': new Date(now + 60_000).toISOString(),
        'query.num_traces': String(opts.limit ?? 100),
      });
      if (opts.operation !== undefined) params.set('query.operation_name', opts.operation);
      if (opts.adjusted !== true) params.set('query.raw_traces', 'true');
      const data = await queryV3(`${queryUrl}/api/v3/traces?${params}`);
      return data === undefined ? undefined : tracesFromOtlpJson(data);
    },
    (traces) => traces.reduce((n, t) => n + t.spans.length, 0),
  );
  return found ?? [];
}

/** The service names Jaeger has seen (`GET /api/v3/services`). */
export async function getServices(queryUrl: string): Promise<string[]> {
  const response = await fetch(`${queryUrl}/api/v3/services`, {
    signal: AbortSignal.timeout(10_000),
  });
  if (!response.ok) {
    throw new LocalJaegerError(`GET ${queryUrl}/api/v3/services: HTTP ${response.status}`);
  }
  return ((await response.json()) as { services?: string[] }).services ?? [];
}

async function poll<T extends Trace | Trace[]>(
  opts: WaitOptions,
  once: () => Promise<T | undefined>,
  count: (found: T) => number = (found) => (found as Trace).spans.length,
): Promise<T | undefined> {
  const deadline = Date.now() + (opts.timeoutMs ?? 0);
  const minSpans = opts.minSpans ?? 1;
  for (;;) {
    const found = await once();
    if ((found !== undefined && count(found) >= minSpans) || Date.now() >= deadline) return found;
    await sleep(100);
  }
}

/** Parent/child lookups over a trace's spans, for assertions and pictures. */
export function spanTree(trace: Trace): {
  roots: TraceSpan[];
  children: (span: TraceSpan) => TraceSpan[];
  byId: Map<string, TraceSpan>;
} {
  const byId = new Map(trace.spans.map((span) => [span.spanId, span]));
  const kids = new Map<string, TraceSpan[]>();
  const roots: TraceSpan[] = [];
  for (const span of trace.spans) {
    // A span whose parent is elsewhere (another process's, not exported here) is a root here.
    if (span.parentSpanId === undefined || !byId.has(span.parentSpanId)) roots.push(span);
    else kids.set(span.parentSpanId, [...(kids.get(span.parentSpanId) ?? []), span]);
  }
  return { roots, children: (span) => kids.get(span.spanId) ?? [], byId };
}
