/**
 * Supervision of a local service spawned for development, tests and CI (the Kafka broker in
 * src/kafka/local-broker.ts, Jaeger in src/telemetry/local-jaeger.ts): free loopback ports, a log
 * file shared by the child's stdout and stderr, a kill when Node exits, a graceful stop, and the
 * wait until the service answers.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { open, readFile, readdir, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';

export type Log = (msg: string) => void;
export const silent: Log = () => {};

/** How many lines of a log an error message quotes. */
export const LOG_TAIL_LINES = 30;

/** Makes the caller's own error type (LocalJaegerError, StreamscoreError...). */
export type MakeError = (
  message: string,
  details?: Record<string, unknown>,
  cause?: unknown,
) => Error;

/**
 * The package root as seen from a module (src/ and dist/ alike): the nearest folder above
 * `moduleUrl` that holds `marker` (e.g. kafka/pom.xml); null when there is none.
 */
export function findPackageRoot(moduleUrl: string, marker: string): string | null {
  let dir = path.dirname(fileURLToPath(moduleUrl));
  for (;;) {
    if (existsSync(path.join(dir, marker))) return dir;
    const parent = path.dirname(dir);
    if (parent === dir) return null;
    dir = parent;
  }
}

/** Asks the OS for free loopback ports; all listeners stay open until all are picked, so they differ. */
export async function freePorts(count: number, makeError: MakeError): Promise<number[]> {
  const servers = await Promise.all(
    Array.from({ length: count }, () => {
      const server = createServer();
      return new Promise<ReturnType<typeof createServer>>((resolve, reject) => {
        server.once('error', reject);
        server.listen(0, '127.0.0.1', () => resolve(server));
      });
    }),
  );
  const ports = servers.map((server) => {
    const address = server.address();
    if (address === null || typeof address === 'string') {
      throw makeError('could not pick a free port');
    }
    return address.port;
  });
  await Promise.all(servers.map((server) => new Promise((resolve) => server.close(resolve))));
  return ports;
}

/** The last `lines` lines of a log file, or `(no log)`. */
export async function tail(file: string, lines = LOG_TAIL_LINES): Promise<string> {
  try {
    return (await readFile(file, 'utf8')).trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Removes the entries of `dir` whose name carries (as `pattern`'s first group) the pid of a Node
 * process that has exited: run directories, and builds interrupted midway. A live owner keeps its own.
 */
export async function pruneDeadOwners(dir: string, pattern: RegExp): Promise<void> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch {
    return;
  }
  for (const name of names) {
    const pid = Number(pattern.exec(name)?.[1]);
    if (!Number.isInteger(pid) || pid === process.pid || isAlive(pid)) continue;
    await rm(path.join(dir, name), { recursive: true, force: true });
  }
}

export interface SpawnSupervisedOptions {
  cwd: string;
  /**
   * Takes the child's stdout and stderr; opened for appending, so the child's own output and a
   * file appender of its own share it without overwriting each other.
   */
  logFile: string;
  /** Names the service in `<name> did not stop within <grace> s; killing it`. */
  name: string;
  /** How long stop() waits after SIGTERM before SIGKILL. */
  graceMs: number;
  log: Log;
}

export interface Supervised {
  /** The child's pid (undefined only when it could not be spawned). */
  pid: number | undefined;
  /** Resolves with the exit code (or null when killed by a signal) once the child has exited. */
  exited: Promise<number | null>;
  hasExited(): boolean;
  /** SIGTERM, then SIGKILL after the grace period. Safe to call more than once, also concurrently. */
  stop(): Promise<void>;
  /** SIGKILL at once (nothing worth a clean shutdown), resolving once the child has exited. */
  kill(): Promise<void>;
}

/**
 * Spawns a local service with its output in `logFile` and watches it. It is SIGKILLed when Node
 * exits without stop(), so it never leaves ports held behind.
 */
export async function spawnSupervised(
  command: string,
  args: string[],
  opts: SpawnSupervisedOptions,
): Promise<Supervised> {
  const logHandle = await open(opts.logFile, 'a');
  let child: ChildProcess;
  try {
    child = spawn(command, args, {
      cwd: opts.cwd,
      stdio: ['ignore', logHandle.fd, logHandle.fd],
    });
  } finally {
    await logHandle.close(); // the child holds its own copy of the descriptor
  }

  const killOnExit = (): void => {
    child.kill('SIGKILL');
  };
  process.on('exit', killOnExit);
  let hasExited = false;
  const exited = new Promise<number | null>((resolve) => {
    child.once('exit', (code) => resolve(code));
    child.once('error', () => resolve(-1)); // e.g. the command is not on PATH
  }).then((code) => {
    hasExited = true;
    process.off('exit', killOnExit);
    return code;
  });

  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> =>
    (stopping ??= (async () => {
      if (hasExited) return;
      child.kill('SIGTERM');
      // Unref'd: the child's own handle keeps Node alive while it runs, and a stopped service
      // must not hold the process open for the rest of the grace period.
      const timer = sleep(opts.graceMs, 'timeout' as const, { ref: false });
      if ((await Promise.race([exited, timer])) === 'timeout') {
        opts.log(`${opts.name} did not stop within ${opts.graceMs / 1000} s; killing it`);
        child.kill('SIGKILL');
        await exited;
      }
    })());

  const kill = async (): Promise<void> => {
    child.kill('SIGKILL');
    await exited;
  };
  return { pid: child.pid, exited, hasExited: () => hasExited, stop, kill };
}

export interface PollUntilReadyOptions {
  /** Names the service in the errors: `<name> failed to start`, `<name> not ready after ...`. */
  name: string;
  /**
   * One attempt: true when the service is ready, false to try again; a throw also tries again and
   * becomes the cause of the timeout error.
   */
  probe: () => Promise<boolean>;
  hasExited: () => boolean;
  logFile: string;
  timeoutMs: number;
  /** Pause between attempts. */
  intervalMs: number;
  makeError: MakeError;
}

/** Probes until the service is ready; throws (quoting the log's tail) if it exits or times out. */
export async function pollUntilReady(opts: PollUntilReadyOptions): Promise<void> {
  const { name, logFile } = opts;
  const deadline = Date.now() + opts.timeoutMs;
  let lastError: unknown;
  while (Date.now() < deadline) {
    if (opts.hasExited()) {
      throw opts.makeError(
        `${name} failed to start; last lines of ${logFile}:\n${await tail(logFile)}`,
        { logFile },
      );
    }
    try {
      if (await opts.probe()) return;
    } catch (err) {
      lastError = err;
    }
    await sleep(opts.intervalMs);
  }
  throw opts.makeError(
    `${name} not ready after ${opts.timeoutMs / 1000} s; last lines of ${logFile}:\n${await tail(logFile)}`,
    { logFile },
    lastError,
  );
}
