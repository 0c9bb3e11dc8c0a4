/**
 * A real single-node Apache Kafka broker (KRaft, broker and controller in one JVM, loopback only)
 * for the demo, the integration tests and CI. Neither npm nor Debian packages a broker, so the jars
 * come from Maven Central through kafka/pom.xml and run with the machine's Java 17+.
 *
 * Not for production: one replica, no security, and data in a throwaway directory.
 */
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readFile, readdir, rename, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify, stripVTControlCharacters } from 'node:util';
import { Kafka, logLevel } from 'kafkajs';
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

/** The dependency plugin is pinned so a cold fetch behaves the same everywhere. */
const COPY_DEPENDENCIES =
  'org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy-dependencies';
const MARKER = '.complete.json';
const READY_TIMEOUT_MS = 60_000;
const STOP_GRACE_MS = 15_000;

export interface EnsureKafkaJarsOptions {
  /** Where `libs/` goes. Default: `<repo>/.cache/kafka/<kafka.version>`. */
  cacheDir?: string;
  log?: Log;
}

export interface LocalBrokerOptions {
  /** PLAINTEXT port on 127.0.0.1. Default: a free port. */
  port?: number;
  /** KRaft controller port on 127.0.0.1. Default: a free port. */
  controllerPort?: number;
  /** JVM max heap in MiB. Default: 512. */
  heapMb?: number;
  /** A fresh directory for config, data and log. Default: `<repo>/.cache/kafka/run-<timestamp>-<pid>`. */
  dataDir?: string;
  /**
   * Start on `dataDir` as an earlier broker left it (topics, committed offsets, transactions,
   * cluster id), formatting the storage only if it was never formatted. Default: false, and a
   * formatted `dataDir` is an error. `restart()` sets it.
   */
  reuseDataDir?: boolean;
  log?: Log;
}

export interface LocalBroker {
  /** Bootstrap addresses for clients, e.g. `['127.0.0.1:40123']`. */
  brokers: string[];
  dataDir: string;
  /** The broker's own log (log4j WARN and up, plus the JVM's stdout/stderr). */
  logFile: string;
  pid: number;
  /** Resolves with the exit code (or null when killed by a signal) once the JVM has exited. */
  exited: Promise<number | null>;
  /** SIGTERM, then SIGKILL after 15 s. Safe to call more than once, also concurrently. */
  stop(): Promise<void>;
  /**
   * Stops this broker if it still runs (as stop() does) and starts a new JVM on the same data dir
   * and ports, so clients reconnect to the same address and find their topics, committed offsets
   * and transactions again. Resolves with the new broker's handle once it is ready; this handle
   * keeps describing the stopped JVM.
   */
  restart(): Promise<LocalBroker>;
}

/** The package root: the nearest folder above this module holding kafka/pom.xml (src/ and dist/ alike). */
function findRoot(): string {
  const root = findPackageRoot(import.meta.url, path.join('kafka', 'pom.xml'));
  if (root === null)
    throw fail('cannot find kafka/pom.xml above ' + fileURLToPath(import.meta.url));
  return root;
}

function fail(
  message: string,
  details: Record<string, unknown> = {},
  cause?: unknown,
): StreamscoreError {
  return new StreamscoreError('LOCAL_BROKER_FAILED', message, { details, cause });
}

interface Marker {
  pomSha256: string;
  jars: string[];
}

/** Downloads the broker's jars once; later calls only check the marker. Returns the libs folder. */
export async function ensureKafkaJars(opts: EnsureKafkaJarsOptions = {}): Promise<string> {
  const log = opts.log ?? silent;
  const root = findRoot();
  const pomPath = path.join(root, 'kafka', 'pom.xml');
  const pom = await readFile(pomPath, 'utf8');
  const version = /<kafka\.version>([^<]+)<\/kafka\.version>/.exec(pom)?.[1];
  if (version === undefined)
    throw fail('kafka/pom.xml has no <kafka.version> property', { pomPath });
  const cacheDir = opts.cacheDir ?? path.join(root, '.cache', 'kafka', version);
  const libs = path.join(cacheDir, 'libs');
  const pomSha256 = createHash('sha256').update(pom).digest('hex');

  // The marker is written last, so its presence means mvn finished; the pom hash catches edits
  // that keep the version (a new log4j, say), and the jar list catches files deleted by hand.
  const marker = await readMarker(path.join(libs, MARKER));
  if (
    marker?.pomSha256 === pomSha256 &&
    marker.jars.every((jar) => existsSync(path.join(libs, jar)))
  ) {
    return libs;
  }

  // Download next to the target and rename it into place, so an interrupted fetch never leaves a
  // half-filled libs/ and a changed pom never leaves stale jars of another version on the classpath.
  const staging = `${libs}.tmp-${process.pid}`;
  await rm(staging, { recursive: true, force: true });
  log(`fetching Kafka ${version} jars with Maven into ${libs}`);
  const started = Date.now();
  try {
    await execFileAsync(
      'mvn',
      [
        '-B',
        '-q',
        '-f',
        pomPath,
        COPY_DEPENDENCIES,
        `-DoutputDirectory=${staging}`,
        '-DincludeScope=runtime',
      ],
      { maxBuffer: 64 * 1024 * 1024 },
    );
  } catch (err) {
    await rm(staging, { recursive: true, force: true });
    // mvn -q prints its [ERROR] lines on stdout, and Maven 3.8 adds colour resets even with -B.
    const output = err as { stdout?: string; stderr?: string };
    const text = stripVTControlCharacters(`${output.stdout ?? ''}${output.stderr ?? ''}`)
      .trim()
      .split('\n')
      .slice(-LOG_TAIL_LINES)
      .join('\n');
    throw fail(`mvn could not fetch the Kafka jars: ${text || String(err)}`, { pomPath }, err);
  }
  const jars = (await readdir(staging)).filter((name) => name.endsWith('.jar')).sort();
  await writeFile(
    path.join(staging, MARKER),
    JSON.stringify({ pomSha256, jars } satisfies Marker, null, 2),
  );
  await rm(libs, { recursive: true, force: true });
  await rename(staging, libs);
  log(`fetched ${jars.length} jars in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  return libs;
}

async function readMarker(file: string): Promise<Marker | undefined> {
  try {
    return JSON.parse(await readFile(file, 'utf8')) as Marker;
  } catch {
    return undefined; // missing or torn: fetch again
  }
}

/** Kafka's cluster id format: 16 random bytes, URL-safe base64, not starting with '-' (read as an option). */
function clusterId(): string {
  for (;;) {
    const id = randomBytes(16).toString('base64url');
    if (!id.startsWith('-')) return id;
  }
}

function serverProperties(port: number, controllerPort: number, logDirs: string): string {
  return [
    '# Written by src/kafka/local-broker.ts: a single-node KRaft test broker on loopback.',
    'process.roles=broker,controller',
    'node.id=1',
    `listeners=PLAINTEXT://127.0.0.1:${port},CONTROLLER://127.0.0.1:${controllerPort}`,
    `advertised.listeners=PLAINTEXT://127.0.0.1:${port}`,
    'listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT',
    'inter.broker.listener.name=PLAINTEXT',
    'controller.listener.names=CONTROLLER',
    // A dynamic quorum of one, formatted with `--standalone` (Kafka 4's quickstart setup).
    `controller.quorum.bootstrap.servers=127.0.0.1:${controllerPort}`,
    `log.dirs=${logDirs}`,
    'num.partitions=1',
    // Tests create their topics explicitly, with the partition counts they assert on.
    'auto.create.topics.enable=false',
    // One broker can only hold one replica; the defaults (3, min.isr 2) leave the group and
    // transaction coordinators unavailable ("group coordinator not available" in kafkajs).
    'offsets.topic.replication.factor=1',
    'transaction.state.log.replication.factor=1',
    'transaction.state.log.min.isr=1',
    'share.coordinator.state.topic.replication.factor=1',
    'share.coordinator.state.topic.min.isr=1',
    // The defaults create 50 partitions each on first use; a few serve one node and start faster.
    'offsets.topic.num.partitions=4',
    'transaction.state.log.num.partitions=4',
    // Tests join groups one consumer at a time; the 3 s default delay would only add waiting.
    'group.initial.rebalance.delay.ms=0',
    // The machines have two cores.
    'num.network.threads=2',
    'num.io.threads=2',
    '',
  ].join('\n');
}

/** Formats a fresh KRaft log dir with a new cluster id (a dynamic quorum of one). */
async function formatStorage(
  java: string,
  jvmArgs: string[],
  configFile: string,
  dataDir: string,
  log: Log,
): Promise<void> {
  log(`formatting KRaft storage in ${dataDir}`);
  try {
    await execFileAsync(java, [
      ...jvmArgs,
      'kafka.tools.StorageTool',
      'format',
      '--cluster-id',
      clusterId(),
      '--config',
      configFile,
      '--standalone',
    ]);
  } catch (err) {
    const output = err as { stdout?: string; stderr?: string };
    throw fail(
      `kafka storage format failed: ${(output.stderr || output.stdout || String(err)).trim()}`,
      { dataDir },
      err,
    );
  }
}

/** Starts the broker and resolves once a client can describe the cluster. */
export async function startLocalBroker(opts: LocalBrokerOptions = {}): Promise<LocalBroker> {
  const log = opts.log ?? silent;
  const root = findRoot();
  const libs = await ensureKafkaJars({ log });
  const cacheRoot = path.join(root, '.cache', 'kafka');
  // Removes run directories left by Node processes that have exited; a live owner keeps its own.
  if (opts.dataDir === undefined) await pruneDeadOwners(cacheRoot, /^run-\d+-(\d+)$/);
  const dataDir = path.resolve(
    opts.dataDir ?? path.join(cacheRoot, `run-${Date.now()}-${process.pid}`),
  );
  const logFile = path.join(dataDir, 'broker.log');
  const configFile = path.join(dataDir, 'server.properties');
  const storageDir = path.join(dataDir, 'data');

  const [freeA, freeB] = await freePorts(2, fail);
  const port = opts.port ?? freeA!;
  const controllerPort = opts.controllerPort ?? (freeB === port ? freeA! : freeB!);

  await mkdir(dataDir, { recursive: true });
  await writeFile(configFile, serverProperties(port, controllerPort, storageDir));

  const java = process.env['JAVA_HOME']
    ? path.join(process.env['JAVA_HOME'], 'bin', 'java')
    : 'java';
  const jvmArgs = [
    '-cp',
    path.join(libs, '*'),
    `-Dlog4j2.configurationFile=${path.join(root, 'kafka', 'log4j2.properties')}`,
    `-Dkafka.logs.dir=${dataDir}`,
    // Kafka shuts down in its own JVM shutdown hook; log4j's hook would stop logging in parallel
    // and print "Unable to register Log4j shutdown hook because JVM is shutting down".
    '-Dlog4j2.shutdownHookEnabled=false',
  ];

  // KRaft refuses to start on an unformatted log dir ("No readable meta.properties files found"),
  // and StorageTool refuses to format one twice; a reused dir keeps its cluster id.
  const formatted = existsSync(path.join(storageDir, 'meta.properties'));
  if (opts.reuseDataDir === true && formatted) {
    log(`reusing KRaft storage in ${dataDir}`);
  } else {
    await formatStorage(java, jvmArgs, configFile, dataDir, log);
  }

  const heapMb = opts.heapMb ?? 512;
  const spawnedAt = Date.now();
  // Never leave a JVM holding ports behind when Node exits without calling stop().
  const jvm = await spawnSupervised(
    java,
    [
      `-Xms128m`,
      `-Xmx${heapMb}m`,
      '-XX:+ExitOnOutOfMemoryError',
      ...jvmArgs,
      'kafka.Kafka',
      configFile,
    ],
    // The log file is opened for appending, so the JVM's own output and log4j's file appender
    // share it without overwriting each other.
    { cwd: dataDir, logFile, name: 'broker', graceMs: STOP_GRACE_MS, log },
  );

  const brokers = [`127.0.0.1:${port}`];
  try {
    await waitUntilReady(brokers, jvm.hasExited, logFile);
  } catch (err) {
    await jvm.kill(); // nothing worth a clean shutdown yet
    throw err;
  }
  log(
    `Kafka broker ready at ${brokers[0]} in ${((Date.now() - spawnedAt) / 1000).toFixed(1)} s (pid ${jvm.pid}, log ${logFile})`,
  );
  const restart = async (): Promise<LocalBroker> => {
    await jvm.stop();
    return startLocalBroker({ ...opts, port, controllerPort, dataDir, reuseDataDir: true });
  };
  return { brokers, dataDir, logFile, pid: jvm.pid!, exited: jvm.exited, stop: jvm.stop, restart };
}

/** Retries an admin describeCluster() until it succeeds, the JVM exits, or the deadline passes. */
async function waitUntilReady(
  brokers: string[],
  hasExited: () => boolean,
  logFile: string,
): Promise<void> {
  const kafka = new Kafka({
    clientId: 'streamscore-local-broker',
    brokers,
    logLevel: logLevel.NOTHING,
    connectionTimeout: 1_000,
    // Short, so an attempt against something else listening on the port cannot stall the loop.
    requestTimeout: 2_000,
    retry: { retries: 0 },
  });
  await pollUntilReady({
    name: 'Kafka broker',
    probe: async () => {
      const admin = kafka.admin();
      try {
        await admin.connect();
        const cluster = await admin.describeCluster();
        return cluster.brokers.length > 0 && cluster.controller !== null;
      } finally {
        // A throw above is kept as the last error: not listening yet, or still electing itself
        // controller.
        await admin.disconnect().catch(() => {});
      }
    },
    hasExited,
    logFile,
    timeoutMs: READY_TIMEOUT_MS,
    intervalMs: 250,
    makeError: fail,
  });
}
