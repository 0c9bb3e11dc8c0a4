/**
 * `streamscore tracing [status] | pause | resume`: reads and switches a running worker's tracing
 * over its HTTP server (GET /tracing, POST /tracing/pause, /tracing/resume), without a restart.
 */
import { Command, InvalidArgumentError } from 'commander';
import { parseSampleRatio, type TracingState } from '../telemetry/tracing.js';
import { askWorker, DEFAULT_WORKER_URL, processIo, type ModelsIo } from './models.js';

export interface TracingFlags {
  url?: string;
  json?: boolean;
  /** resume: the share of new traces to keep from now on. */
  sampleRatio?: number;
}

function describeState(s: TracingState): string {
  if (!s.configured) return 'tracing: off (the worker was started without telemetry.otlpEndpoint)';
  const ratio = `${Math.round(s.sampleRatio * 1e4) / 100} %`;
  return s.on
    ? `tracing: on, new traces kept at ${ratio}; ${s.inFlight} requests in flight traced`
    : `tracing: paused (new traces were kept at ${ratio}); ${s.inFlight} requests in flight traced`;
}

/**
 * Asks the worker for its tracing state, or switches it. Exit 0 when done, 1 when the worker
 * refused (started without tracing, a bad ratio) or could not be asked.
 */
export async function tracingCommand(
  action: 'status' | 'pause' | 'resume',
  flags: TracingFlags,
  io: ModelsIo = processIo,
): Promise<number> {
  const endpoint =
    action === 'status'
      ? '/tracing'
      : action === 'pause'
        ? '/tracing/pause'
        : `/tracing/resume${flags.sampleRatio === undefined ? '' : `?sampleRatio=${flags.sampleRatio}`}`;
  const answer = await askWorker(flags.url, endpoint, io, action === 'status' ? 'GET' : 'POST');
  if (!answer) return 1;
  const { url, status, body } = answer;
  if (flags.json) io.stdout(JSON.stringify({ status, ...body }, null, 2) + '\n');
  else if (status === 200) io.stdout(describeState(body as unknown as TracingState) + '\n');
  else io.stderr(`streamscore: ${url} answered ${status}: ${String(body.error ?? '')}\n`);
  return status === 200 ? 0 : 1;
}

function ratioArgument(text: string): number {
  try {
    return parseSampleRatio(text);
  } catch {
    throw new InvalidArgumentError('expected a number > 0 and ≤ 1');
  }
}

/** Adds `tracing [status] | pause | resume` to `program`; each sets `process.exitCode`. */
export function registerTracingCommand(program: Command, io: ModelsIo = processIo): Command {
  const tracing = program
    .command('tracing')
    .description("show, pause or resume a running worker's tracing (GET/POST /tracing)");
  const common = (command: Command) =>
    command
      .option('-u, --url <url>', "the worker's HTTP server", DEFAULT_WORKER_URL)
      .option('--json', 'print machine-readable JSON');
  common(tracing.command('status', { isDefault: true }))
    .description('whether requests are traced now, at which ratio, and how many are in flight')
    .action(async (flags: TracingFlags) => {
      process.exitCode = await tracingCommand('status', flags, io);
    });
  common(tracing.command('pause'))
    .description('stop tracing requests read from now on (those in flight finish)')
    .action(async (flags: TracingFlags) => {
      process.exitCode = await tracingCommand('pause', flags, io);
    });
  common(tracing.command('resume'))
    .description('trace requests read from now on again')
    .option(
      '--sample-ratio <r>',
      'keep new traces at this share (0 < r ≤ 1); default: the ratio kept before',
      ratioArgument,
    )
    .action(async (flags: TracingFlags) => {
      process.exitCode = await tracingCommand('resume', flags, io);
    });
  return tracing;
}
