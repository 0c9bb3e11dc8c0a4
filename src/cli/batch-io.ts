/**
 * What `streamscore score` and `streamscore produce` share: where they write, how they are
 * interrupted, their configuration flags, and how a failure becomes a message and an exit code.
 * Each command is a function returning its exit code, so tests run it in-process.
 */
import { pino } from 'pino';
import { loadConfig, type StreamscoreConfig } from '../config/index.js';
import { isStreamscoreError } from '../errors.js';
import { createLogger, type Logger } from '../telemetry/logger.js';
import { RecordFileError } from './record-files.js';
import { isScoringError } from '../client/errors.js';

export interface BatchIo {
  stdout: (text: string) => void;
  stderr: (text: string) => void;
  /** A progress bar on stderr when true; plain lines every `progressEveryMs` when false. */
  isTTY: boolean;
  progressEveryMs?: number;
  /** Aborted on the first SIGINT/SIGTERM: finish what is in flight, then stop. */
  stop?: AbortSignal;
  /** Aborted on the second: stop now. */
  kill?: AbortSignal;
  /** Defaults to process.env. */
  env?: NodeJS.ProcessEnv;
}

export interface ConfigFlags {
  config?: string;
  brokers?: string;
  logLevel?: string;
}

export const EXIT_OK = 0;
export const EXIT_FAILED = 1;
/** EX_CONFIG, as the rest of the CLI. */
export const EXIT_CONFIG = 78;
/** 128 + SIGINT: stopped by the user; the output so far is complete and can be resumed. */
export const EXIT_INTERRUPTED = 130;

/** defaults ← file ← flags ← environment, as `streamscore run` loads it. */
export function configFrom(flags: ConfigFlags, io: BatchIo): StreamscoreConfig {
  const brokers = flags.brokers
    ?.split(',')
    .map((b) => b.trim())
    .filter((b) => b.length > 0);
  return loadConfig({
    file: flags.config,
    env: io.env ?? process.env,
    overrides: brokers ? { kafka: { brokers } } : {},
  });
}

/** JSON log lines on stderr (stdout may be data), at `--log-level`. */
export function stderrLogger(flags: ConfigFlags): Logger {
  return createLogger(flags.logLevel ?? 'warn', pino.destination(2));
}

/** Prints an error as the rest of the CLI does and returns its exit code. */
export function failure(err: unknown, io: BatchIo): number {
  if (isStreamscoreError(err) || isScoringError(err)) {
    io.stderr(`streamscore: ${err.code}: ${err.message}\n`);
    return err.code.startsWith('CONFIG') ? EXIT_CONFIG : EXIT_FAILED;
  }
  if (err instanceof RecordFileError) {
    io.stderr(`streamscore: ${err.message}\n`);
    return EXIT_FAILED;
  }
  io.stderr(`streamscore: ${(err as Error)?.stack ?? String(err)}\n`);
  return EXIT_FAILED;
}

/**
 * Process signals as two AbortSignals: the first SIGINT/SIGTERM aborts `stop`, the second `kill`.
 * Returns them with a function that removes the handlers.
 */
export function signalsFromProcess(): { stop: AbortSignal; kill: AbortSignal; dispose(): void } {
  const stop = new AbortController();
  const kill = new AbortController();
  const onSignal = () => (stop.signal.aborted ? kill.abort() : stop.abort());
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  return {
    stop: stop.signal,
    kill: kill.signal,
    dispose() {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
    },
  };
}
