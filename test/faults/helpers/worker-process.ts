/**
 * The worker under fault: `streamscore run` as operators start it (its own process, configured
 * only through STREAMSCORE_* variables), with its pino JSON log parsed line by line.
 *
 * Every process spawned here is tracked: `killWorkers()` (afterEach) SIGKILLs whatever a failed
 * test left running, and Node's exit does the same as a last resort.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { REPO_ROOT } from '../../model/helpers.js';

export type DeliveryMode = 'at-least-once' | 'exactly-once';
export const DELIVERY_MODES: DeliveryMode[] = ['at-least-once', 'exactly-once'];

export type LogLine = Record<string, unknown> & { msg?: string; level?: number; time?: number };

export interface WorkerExit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface WorkerProcess {
  /** A name for messages, e.g. 'A'. */
  name: string;
  pid: number;
  child: ChildProcess;
  /** Every JSON log line so far, in order. */
  logs: LogLine[];
  /** Everything the process wrote on stderr so far (and stdout lines that were not JSON). */
  stderr(): string;
  /** Resolves once the process exited, however. */
  exited: Promise<WorkerExit>;
  /** Whether the process is still running. */
  alive(): boolean;
  /** Resolves with the first log line (already logged or still to come) that matches. */
  waitForLog(match: (line: LogLine) => boolean, timeoutMs: number, what?: string): Promise<LogLine>;
  kill(signal: NodeJS.Signals): void;
  /** SIGTERM (a clean drain), SIGKILL after `graceMs`; resolves with how it exited. */
  stop(graceMs?: number): Promise<WorkerExit>;
  /** The last log lines and stderr, for assertion messages. */
  describe(lines?: number): string;
}

const running = new Set<WorkerProcess>();

process.on('exit', () => {
  for (const worker of running) worker.child.kill('SIGKILL');
});

export interface WorkerEnvOptions {
  brokers: string[];
  groupId: string;
  requests: string;
  results: string;
  deadLetter: string;
  mode: DeliveryMode;
  /** Any other STREAMSCORE_* variables. */
  extra?: Record<string, string>;
}

/**
 * The environment of a worker for fault tests: one model replica (two cores are shared with the
 * broker and the test), a short session timeout so a killed member leaves the group quickly, and
 * the default 500 ms commit interval.
 */
export function workerEnv(opts: WorkerEnvOptions): Record<string, string> {
  return {
    STREAMSCORE_KAFKA_BROKERS: opts.brokers.join(','),
    STREAMSCORE_KAFKA_GROUP_ID: opts.groupId,
    STREAMSCORE_TOPICS_REQUESTS: opts.requests,
    STREAMSCORE_TOPICS_RESULTS: opts.results,
    STREAMSCORE_TOPICS_DEAD_LETTER: opts.deadLetter,
    STREAMSCORE_DELIVERY_MODE: opts.mode,
    STREAMSCORE_MODEL_REPLICAS: '1',
    STREAMSCORE_KAFKA_SESSION_TIMEOUT_MS: '10000',
    STREAMSCORE_LOG_LEVEL: 'info',
    ...opts.extra,
  };
}

/** Spawns `streamscore run` with `env` on top of this process's environment. */
export function spawnWorker(name: string, env: Record<string, string>): WorkerProcess {
  // Variables of the test's own environment must not leak into the worker's configuration.
  const inherited = Object.fromEntries(
    Object.entries(process.env).filter(([key]) => !key.startsWith('STREAMSCORE_')),
  );
  const child = spawn(
    process.execPath,
    ['--import', 'tsx', path.join(REPO_ROOT, 'src/cli/main.ts'), 'run'],
    {
      cwd: REPO_ROOT,
      // Any free port for /healthz, /readyz and /metrics: workers run side by side here.
      env: { ...inherited, STREAMSCORE_HTTP_PORT: '0', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  const logs: LogLine[] = [];
  const waiters = new Set<{ match: (line: LogLine) => boolean; resolve: (l: LogLine) => void }>();
  let stderr = '';
  let hasExited = false;
  const exited = new Promise<WorkerExit>((resolve) => {
    child.once('exit', (code, signal) => {
      hasExited = true;
      resolve({ code, signal });
    });
  });

  let buffered = '';
  child.stdout!.on('data', (chunk: Buffer) => {
    buffered += chunk.toString();
    const lines = buffered.split('\n');
    buffered = lines.pop()!;
    for (const text of lines) {
      if (text.trim() === '') continue;
      let line: LogLine;
      try {
        line = JSON.parse(text) as LogLine;
      } catch {
        stderr += `[stdout] ${text}\n`;
        continue;
      }
      logs.push(line);
      for (const waiter of waiters) if (waiter.match(line)) waiter.resolve(line);
    }
  });
  child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));

  const describe = (lines = 15): string =>
    `worker ${name} (pid ${child.pid}), last log lines:\n` +
    logs
      .slice(-lines)
      .map((line) => JSON.stringify(line))
      .join('\n') +
    (stderr.trim() === ''
      ? ''
      : `\nstderr:\n${stderr.trim().split('\n').slice(-lines).join('\n')}`);

  const worker: WorkerProcess = {
    name,
    pid: child.pid!,
    child,
    logs,
    stderr: () => stderr,
    exited,
    alive: () => !hasExited,
    waitForLog(match, timeoutMs, what = 'a matching log line') {
      const seen = logs.find(match);
      if (seen !== undefined) return Promise.resolve(seen);
      return new Promise<LogLine>((resolve, reject) => {
        const waiter = {
          match,
          resolve: (line: LogLine) => {
            done();
            resolve(line);
          },
        };
        const timer = setTimeout(() => {
          done();
          reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}; ${describe()}`));
        }, timeoutMs);
        const onExit = (exit: WorkerExit): void => {
          if (!waiters.has(waiter)) return;
          done();
          reject(
            new Error(
              `worker exited (${exit.code ?? exit.signal}) while waiting for ${what}; ${describe()}`,
            ),
          );
        };
        const done = (): void => {
          clearTimeout(timer);
          waiters.delete(waiter);
        };
        waiters.add(waiter);
        void exited.then(onExit);
      });
    },
    kill(signal) {
      if (!hasExited) child.kill(signal);
    },
    async stop(graceMs = 30_000) {
      worker.kill('SIGTERM');
      const timer = setTimeout(() => worker.kill('SIGKILL'), graceMs);
      try {
        return await exited;
      } finally {
        clearTimeout(timer);
      }
    },
    describe,
  };
  running.add(worker);
  void exited.then(() => running.delete(worker));
  return worker;
}

/** Spawns a worker and resolves once it joined its group ('worker started'). */
export async function startWorker(
  name: string,
  env: Record<string, string>,
  timeoutMs = 60_000,
): Promise<WorkerProcess> {
  const worker = spawnWorker(name, env);
  await worker.waitForLog((line) => line.msg === 'worker started', timeoutMs, "'worker started'");
  return worker;
}

/** SIGKILLs every worker still running and waits for them to exit (afterEach). */
export async function killWorkers(): Promise<void> {
  const left = [...running];
  for (const worker of left) worker.kill('SIGKILL');
  await Promise.all(left.map((worker) => worker.exited));
}

/** Log lines at warn (40) and above, for a test's report when something looks off. */
export function warnings(worker: WorkerProcess): LogLine[] {
  return worker.logs.filter((line) => (line.level ?? 0) >= 40);
}
