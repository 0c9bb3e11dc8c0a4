/**
 * A real Confluent-compatible Schema Registry (Apicurio Registry, in-memory storage, loopback only)
 * for the demo, the integration tests and CI. Clients talk to its Confluent API,
 * `http://127.0.0.1:<port>/apis/ccompat/v7`, as they would to a Confluent Schema Registry.
 *
 * Neither npm nor Debian packages a schema registry, so Apicurio's distribution (a Quarkus
 * fast-jar) comes from Maven Central with the machine's `mvn`, is unpacked once into
 * `.cache/apicurio/<version>/`, and runs with a Java 21+ found on the machine (findJava21()).
 *
 * Not for production: no security, and schemas live in memory until the JVM stops.
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, readFile, readdir, rename, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify, stripVTControlCharacters } from 'node:util';
import { StreamscoreError } from '../errors.js';
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

/** The Apicurio Registry release; docker-compose.yml runs the same version's image. */
export const APICURIO_VERSION = '3.3.3';
/** groupId:artifactId:version:type:classifier of the distribution on Maven Central. */
const ARTIFACT = `io.apicurio:apicurio-registry-app:${APICURIO_VERSION}:tar.gz:all`;
/** The dependency plugin is pinned so a cold fetch behaves the same everywhere. */
const COPY = 'org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy';
/** Apicurio 3 is built for Java 21 (class file version 65). */
const MIN_JAVA = 21;
/** The fast-jar's launcher; lib/, app/ and quarkus/ lie next to it. */
const RUNNER = 'quarkus-run.jar';
const MARKER = '.complete.json';
/** The Confluent-compatible API's base path. */
const CCOMPAT_PATH = '/apis/ccompat/v7';
const READY_TIMEOUT_MS = 60_000;
const STOP_GRACE_MS = 10_000;

/** Numbers this process's run directories: two registries may start in the same millisecond. */
let runCount = 0;

export interface EnsureRegistryOptions {
  /** Where the distribution is unpacked. Default: `<repo>/.cache/apicurio/<version>`. */
  cacheDir?: string;
  log?: Log;
}

export interface LocalRegistryOptions {
  /** HTTP port on 127.0.0.1. Default: a free port. */
  port?: number;
  /** JVM max heap in MiB. Default: 384. */
  heapMb?: number;
  /** A fresh directory for the log. Default: `<repo>/.cache/apicurio/run-<timestamp>-<pid>-<n>`. */
  runDir?: string;
  log?: Log;
}

export interface LocalRegistry {
  /** The Confluent API's base URL, e.g. `http://127.0.0.1:40123/apis/ccompat/v7`. */
  url: string;
  port: number;
  /** The JVM's stdout and stderr (Quarkus logs to the console). */
  logFile: string;
  pid: number;
  /** Resolves with the exit code (or null when killed by a signal) once the JVM has exited. */
  exited: Promise<number | null>;
  /** SIGTERM, then SIGKILL after 10 s. Safe to call more than once, also concurrently. */
  stop(): Promise<void>;
}

/** A Java runtime and its feature release (8, 17, 21, 25...). */
export interface JavaRuntime {
  java: string;
  major: number;
}

export interface FindJavaOptions {
  /** Default: process.env (JAVA_HOME and PATH are read). */
  env?: NodeJS.ProcessEnv;
  /** Folders holding one JDK or JRE per subfolder. Default: `['/usr/lib/jvm']`. */
  jvmRoots?: string[];
}

/** The package root: the nearest folder above this module holding package.json (src/ and dist/ alike). */
function findRoot(): string {
  const root = findPackageRoot(import.meta.url, 'package.json');
  if (root === null) throw fail('cannot find package.json above ' + fileURLToPath(import.meta.url));
  return root;
}

function fail(
  message: string,
  details: Record<string, unknown> = {},
  cause?: unknown,
): StreamscoreError {
  return new StreamscoreError('LOCAL_REGISTRY_FAILED', message, { details, cause });
}

interface Marker {
  artifact: string;
}

/**
 * Downloads and unpacks Apicurio Registry once; later calls only check the marker. Returns the
 * folder holding quarkus-run.jar.
 */
export async function ensureRegistryDistribution(
  opts: EnsureRegistryOptions = {},
): Promise<string> {
  const log = opts.log ?? silent;
  const cacheDir = path.resolve(
    opts.cacheDir ?? path.join(findRoot(), '.cache', 'apicurio', APICURIO_VERSION),
  );
  if (await isComplete(cacheDir)) return cacheDir;

  // Download and unpack next to the target and rename it into place, so an interrupted fetch
  // never leaves a half-unpacked distribution behind; stagings of exited processes are removed.
  const parent = path.dirname(cacheDir);
  const base = path.basename(cacheDir);
  await mkdir(parent, { recursive: true });
  await pruneDeadOwners(
    parent,
    new RegExp(`^${base.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}\\.(?:tmp|download)-(\\d+)$`),
  );
  const staging = `${cacheDir}.tmp-${process.pid}`;
  const download = `${cacheDir}.download-${process.pid}`;
  await rm(staging, { recursive: true, force: true });
  await rm(download, { recursive: true, force: true });
  log(`fetching Apicurio Registry ${APICURIO_VERSION} with Maven into ${cacheDir}`);
  const started = Date.now();
  try {
    try {
      await execFileAsync(
        'mvn',
        ['-B', '-q', COPY, `-Dartifact=${ARTIFACT}`, `-DoutputDirectory=${download}`],
        {
          maxBuffer: 64 * 1024 * 1024,
        },
      );
    } catch (err) {
      throw fail(
        `mvn could not fetch ${ARTIFACT}: ${commandOutput(err)}`,
        { artifact: ARTIFACT },
        err,
      );
    }
    const tarball = (await readdir(download)).find((name) => name.endsWith('.tar.gz'));
    if (tarball === undefined) throw fail(`mvn left no .tar.gz in ${download}`, { download });
    await mkdir(staging, { recursive: true });
    try {
      await execFileAsync('tar', ['-xzf', path.join(download, tarball), '-C', staging]);
    } catch (err) {
      throw fail(`could not unpack ${tarball}: ${commandOutput(err)}`, { tarball }, err);
    }
    if (!existsSync(path.join(staging, RUNNER))) {
      throw fail(`${tarball} has no ${RUNNER} at its top level`, { tarball });
    }
    // The marker is written last, so its presence means the distribution is complete.
    await writeFile(
      path.join(staging, MARKER),
      JSON.stringify({ artifact: ARTIFACT } satisfies Marker, null, 2),
    );
    await rm(cacheDir, { recursive: true, force: true });
    try {
      await rename(staging, cacheDir);
    } catch (err) {
      // Another process finished the same fetch first: its copy is as good as ours.
      if (!(await isComplete(cacheDir))) throw err;
    }
  } finally {
    await rm(staging, { recursive: true, force: true });
    await rm(download, { recursive: true, force: true });
  }
  log(`fetched and unpacked in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  return cacheDir;
}

async function isComplete(dir: string): Promise<boolean> {
  try {
    const marker = JSON.parse(await readFile(path.join(dir, MARKER), 'utf8')) as Marker;
    return marker.artifact === ARTIFACT && existsSync(path.join(dir, RUNNER));
  } catch {
    return false; // missing or torn: fetch again
  }
}

/** The tail of a failed command's output (mvn -q prints its [ERROR] lines on stdout). */
function commandOutput(err: unknown): string {
  const output = err as { stdout?: string; stderr?: string };
  const text = stripVTControlCharacters(`${output.stdout ?? ''}${output.stderr ?? ''}`)
    .trim()
    .split('\n')
    .slice(-LOG_TAIL_LINES)
    .join('\n');
  return text || String(err);
}

/**
 * The feature release in `java -version` output: `openjdk version "17.0.15"` is 17,
 * `openjdk version "25" 2025-09-16` is 25, `java version "1.8.0_402"` is 8. Undefined when the
 * text holds no version.
 */
export function parseJavaMajor(versionOutput: string): number | undefined {
  const match = /version "(\d+)(?:\.(\d+))?[^"]*"/.exec(versionOutput);
  if (match === null) return undefined;
  const first = Number(match[1]);
  return first === 1 && match[2] !== undefined ? Number(match[2]) : first;
}

/**
 * A Java 21 or newer for Apicurio Registry: `$JAVA_HOME/bin/java`, then `java` on PATH, then the
 * newest of `/usr/lib/jvm/<jdk>/bin/java`. The machine's default Java may well be older (Kafka
 * runs on 17), so an older one is passed over, not an error. Throws LOCAL_REGISTRY_FAILED naming
 * every candidate and its version when none is new enough.
 */
export async function findJava21(opts: FindJavaOptions = {}): Promise<JavaRuntime> {
  const env = opts.env ?? process.env;
  const searched: string[] = [];
  const probe = async (java: string, label: string): Promise<JavaRuntime | undefined> => {
    let output: string;
    try {
      // `java -version` writes to stderr; PATH is the caller's, for a bare `java`.
      const result = await execFileAsync(java, ['-version'], { env, timeout: 30_000 });
      output = `${result.stderr}${result.stdout}`;
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      searched.push(`${label}: ${code === 'ENOENT' ? 'not found' : `failed (${String(err)})`}`);
      return undefined;
    }
    const major = parseJavaMajor(output);
    searched.push(
      `${label}: ${major === undefined ? 'no version in `java -version`' : `Java ${major}`}`,
    );
    return major !== undefined && major >= MIN_JAVA ? { java, major } : undefined;
  };

  const javaHome = env['JAVA_HOME'];
  if (javaHome !== undefined && javaHome !== '') {
    const java = path.join(javaHome, 'bin', 'java');
    const found = await probe(java, `JAVA_HOME (${java})`);
    if (found) return found;
  } else {
    searched.push('JAVA_HOME: not set');
  }

  const onPath = await probe('java', '`java` on PATH');
  if (onPath) return onPath;

  let best: JavaRuntime | undefined;
  for (const root of opts.jvmRoots ?? ['/usr/lib/jvm']) {
    let names: string[];
    try {
      names = (await readdir(root)).sort();
    } catch {
      searched.push(`${root}: no such folder`);
      continue;
    }
    for (const name of names) {
      const java = path.join(root, name, 'bin', 'java');
      if (!existsSync(java)) continue;
      const found = await probe(java, java);
      if (found && (best === undefined || found.major > best.major)) best = found;
    }
  }
  if (best) return best;

  throw fail(
    `Apicurio Registry ${APICURIO_VERSION} needs Java ${MIN_JAVA} or newer, and none was found. Searched:\n` +
      searched.map((line) => `  - ${line}`).join('\n') +
      `\nFix: install a JDK or JRE ${MIN_JAVA}+ (e.g. \`apt-get install openjdk-21-jre-headless\`, or Temurin 21) ` +
      `and set JAVA_HOME to it, or put its bin/ folder first on PATH.`,
    { searched, minimum: MIN_JAVA },
  );
}

/** Starts a registry and resolves once its Confluent API answers `GET /subjects` with 200. */
export async function startLocalRegistry(opts: LocalRegistryOptions = {}): Promise<LocalRegistry> {
  const log = opts.log ?? silent;
  const root = findRoot();
  const distribution = await ensureRegistryDistribution({ log });
  const { java } = await findJava21();

  const cacheRoot = path.join(root, '.cache', 'apicurio');
  // Removes run directories left by Node processes that have exited; a live owner keeps its own.
  if (opts.runDir === undefined) await pruneDeadOwners(cacheRoot, /^run-\d+-(\d+)(?:-\d+)?$/);
  const runDir = path.resolve(
    opts.runDir ?? path.join(cacheRoot, `run-${Date.now()}-${process.pid}-${++runCount}`),
  );
  await mkdir(runDir, { recursive: true });
  const logFile = path.join(runDir, 'registry.log');

  const [freeA, freeB] = await freePorts(2, fail);
  const port = opts.port ?? freeA!;
  // The management interface (health, metrics) is on by default, at 0.0.0.0:9000: a fixed port
  // that a second registry, or anything else there, would collide with. It cannot be switched off
  // at run time (a build-time setting), so it gets its own free loopback port.
  const managementPort = freeB === port ? freeA! : freeB!;

  const heapMb = opts.heapMb ?? 384;
  const spawnedAt = Date.now();
  // Never leave a JVM holding ports behind when Node exits without calling stop().
  const jvm = await spawnSupervised(
    java,
    [
      `-Xmx${heapMb}m`,
      '-XX:+ExitOnOutOfMemoryError',
      '-Dquarkus.http.host=127.0.0.1',
      `-Dquarkus.http.port=${port}`,
      '-Dquarkus.management.host=127.0.0.1',
      `-Dquarkus.management.port=${managementPort}`,
      // One log line per request would bury a failure's cause in the log's tail.
      '-Dquarkus.http.access-log.enabled=false',
      // Off by default; system properties win over an inherited QUARKUS_OTEL_SDK_DISABLED.
      '-Dquarkus.otel.sdk.disabled=true',
      '-jar',
      path.join(distribution, RUNNER),
    ],
    // The run directory is the working directory: whatever the JVM writes stays out of the
    // shared distribution folder.
    { cwd: runDir, logFile, name: 'registry', graceMs: STOP_GRACE_MS, log },
  );

  const url = `http://127.0.0.1:${port}${CCOMPAT_PATH}`;
  try {
    await pollUntilReady({
      name: 'Schema Registry',
      probe: async () => {
        // Short, so an attempt against something else listening on the port cannot stall the loop.
        const res = await fetch(`${url}/subjects`, { signal: AbortSignal.timeout(2_000) });
        await res.arrayBuffer();
        return res.status === 200;
      },
      hasExited: jvm.hasExited,
      logFile,
      timeoutMs: READY_TIMEOUT_MS,
      intervalMs: 250,
      makeError: fail,
    });
  } catch (err) {
    await jvm.kill(); // nothing worth a clean shutdown yet
    throw err;
  }
  log(
    `Schema Registry ready at ${url} in ${((Date.now() - spawnedAt) / 1000).toFixed(1)} s (pid ${jvm.pid}, log ${logFile})`,
  );
  return { url, port, logFile, pid: jvm.pid!, exited: jvm.exited, stop: jvm.stop };
}
