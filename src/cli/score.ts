/**
 * `streamscore score <file>`: scores every record of a file (JSON lines, CSV, Avro) and writes one
 * JSON line per input record to the output file, in input order: the result's fields, or
 * `{"<id field>": …, "error": {"code", "message"}}` for a record the worker dead-lettered.
 *
 * Through Kafka (the default) each record is a request to the running worker (ScoringClient); with
 * `--local` the records are scored in this process by the same worker code (local-pipeline.ts).
 *
 * Resuming: the output only ever holds a prefix of the answers, in input order, so an interrupted
 * run (Ctrl-C, kill -9, a timeout) is continued by running the same command again: it counts the
 * complete lines of the output (cutting off a partial last line), skips that many inputs and
 * appends. Request ids are deterministic (`<file name>:<index>` unless the record has an id), so
 * an answer that the first run's requests still get is the answer to the same input; the new run
 * takes the first answer per id and drops the other.
 */
import path from 'node:path';
import { Command } from 'commander';
import { isScoringError } from '../client/errors.js';
import { ScoringClient } from '../client/scoring-client.js';
import { clientCodecFor, type ClientCodec } from '../codec/topics.js';
import { requireBrokers, type StreamscoreConfig } from '../config/index.js';
import { createKafka } from '../kafka/kafkajs.js';
import type { Logger } from '../telemetry/logger.js';
import {
  configFrom,
  EXIT_FAILED,
  EXIT_INTERRUPTED,
  EXIT_OK,
  failure,
  signalsFromProcess,
  stderrLogger,
  type BatchIo,
  type ConfigFlags,
} from './batch-io.js';
import { startLocalPipeline } from './local-pipeline.js';
import { Progress, duration } from './progress.js';
import {
  completeLines,
  countRecords,
  jsonLine,
  LineWriter,
  readRecords,
  RecordFileError,
  recordFileFormat,
} from './record-files.js';
import { positiveInt, withConfigFlags } from './flags.js';

export interface ScoreFlags extends ConfigFlags {
  /** Request topic; default the first of topics.requests. */
  topic?: string;
  /** Output file; default `<input without extension>.results.jsonl`. */
  out?: string;
  /** Score in this process, without Kafka. */
  local?: boolean;
  /** Records sent and not yet written (answers held back for input order count too). */
  concurrency?: number;
  /** How long to wait for one record's answer (Kafka only), ms. */
  timeout?: number;
}

export const DEFAULT_CONCURRENCY = 1000;
export const DEFAULT_TIMEOUT_MS = 30_000;
/** Records per call of the local pipeline: they share its batches as concurrent requests do. */
const LOCAL_CHUNK = 256;

/** One input record on its way. */
interface Input {
  index: number;
  /** Line (row, record number) in the input file, for messages. */
  line: number;
  id: string;
  record: Record<string, unknown>;
}

interface Outcome {
  line: string;
  deadLettered: boolean;
}

/** How records are scored: through the worker over Kafka, or in this process. */
interface Scorer {
  /** Records per `score()` call. */
  readonly unit: number;
  /** One outcome per input, in order; rejects on a failure that must stop the run. */
  score(inputs: Input[]): Promise<Outcome[]>;
  /** Stops; what is still pending is rejected (Kafka) or answered first (local). */
  close(): Promise<void>;
}

const deadLetterLine = (idField: string, id: string, code: string, message: string) =>
  jsonLine({ [idField]: id, error: { code, message } });

async function kafkaScorer(
  config: StreamscoreConfig,
  codec: ClientCodec,
  timeoutMs: number,
  log: Logger,
): Promise<Scorer> {
  requireBrokers(config);
  const client = await ScoringClient.connect({
    kafka: createKafka(config.kafka, log),
    codec,
    deadLetterTopic: [
      config.topics.deadLetter,
      ...(config.topics.failed ? [config.topics.failed] : []),
    ],
    timeoutMs,
    log,
  });
  return {
    unit: 1,
    async score([input]) {
      try {
        return [{ line: jsonLine(await client.score(input!.record)), deadLettered: false }];
      } catch (err) {
        if (!isScoringError(err) || err.code !== 'DEAD_LETTERED') throw err;
        const line = deadLetterLine(
          codec.idField,
          input!.id,
          err.workerCode ?? 'UNKNOWN',
          err.workerMessage ?? '',
        );
        return [{ line, deadLettered: true }];
      }
    },
    close: () => client.close(),
  };
}

async function localScorer(
  config: StreamscoreConfig,
  codec: ClientCodec,
  log: Logger,
): Promise<Scorer> {
  const pipeline = await startLocalPipeline(config, { log });
  return {
    unit: LOCAL_CHUNK,
    async score(inputs) {
      const records = await Promise.all(
        inputs.map(async (input) => ({
          topic: codec.topic,
          key: Buffer.from(input.id),
          value: await codec.encodeRequest(input.record),
        })),
      );
      const outcomes = await pipeline.score(records);
      return Promise.all(
        outcomes.map(async (outcome, k) =>
          outcome.kind === 'result'
            ? { line: jsonLine(await codec.decodeResult(outcome.value)), deadLettered: false }
            : {
                line: deadLetterLine(codec.idField, inputs[k]!.id, outcome.code, outcome.message),
                deadLettered: true,
              },
        ),
      );
    },
    close: () => pipeline.close(),
  };
}

/** `data/requests.jsonl` → `data/requests.results.jsonl`. */
export function defaultOutput(file: string): string {
  const parsed = path.parse(file);
  return path.join(parsed.dir, `${parsed.name}.results.jsonl`);
}

/** A failure tied to the input it happened on. */
class InputFailed extends Error {
  constructor(
    readonly input: Input,
    readonly failure: unknown,
  ) {
    super((failure as Error)?.message ?? String(failure));
  }
}

export interface ScoreSummary {
  total: number;
  /** Lines the output already had when this run started. */
  resumedFrom: number;
  results: number;
  deadLetters: number;
  /** Lines the output has now. */
  lines: number;
  seconds: number;
}

/** Runs `streamscore score`; resolves with the exit code. */
export async function runScore(file: string, flags: ScoreFlags, io: BatchIo): Promise<number> {
  let config: StreamscoreConfig;
  try {
    config = configFrom(flags, io);
  } catch (err) {
    return failure(err, io);
  }
  const log = stderrLogger(flags);
  const out = flags.out ?? defaultOutput(file);
  const concurrency = flags.concurrency ?? DEFAULT_CONCURRENCY;
  const base = path.basename(file);

  let scorer: Scorer | null = null;
  let writer: LineWriter | null = null;
  let progress: Progress | null = null;
  const summary: ScoreSummary = {
    total: 0,
    resumedFrom: 0,
    results: 0,
    deadLetters: 0,
    lines: 0,
    seconds: 0,
  };
  const onKill = () => void scorer?.close();
  io.kill?.addEventListener('abort', onKill, { once: true });
  try {
    recordFileFormat(file);
    const topic = flags.topic ?? config.topics.requests[0]!;
    const codec = await clientCodecFor(config, topic, { log });
    summary.total = await countRecords(file);
    summary.resumedFrom = summary.lines = await completeLines(out);
    if (summary.resumedFrom > summary.total) {
      throw new RecordFileError(
        `${out} has ${summary.resumedFrom} lines but ${file} has ${summary.total} records: it is the output of another input. Fix: give another --out.`,
        out,
      );
    }
    if (summary.resumedFrom === summary.total) {
      io.stdout(`${out} already has a line for each of the ${summary.total} records of ${file}\n`);
      return EXIT_OK;
    }
    if (summary.resumedFrom > 0) {
      io.stderr(
        `resuming: ${out} has ${summary.resumedFrom} of ${summary.total} lines; scoring the other ${summary.total - summary.resumedFrom} records\n`,
      );
    }
    scorer = flags.local
      ? await localScorer(config, codec, log)
      : await kafkaScorer(config, codec, flags.timeout ?? DEFAULT_TIMEOUT_MS, log);
    if (io.kill?.aborted) await scorer.close();
    writer = await LineWriter.open(out);
    const bar = (progress = new Progress({
      label: 'score',
      unit: 'records',
      total: summary.total,
      start: summary.resumedFrom,
      isTTY: io.isTTY,
      write: io.stderr,
      ...(io.progressEveryMs === undefined ? {} : { everyMs: io.progressEveryMs }),
    }));

    // Started and not yet written, in input order. Lines are written only from the head, so the
    // output is always a prefix of the answers: the invariant resuming relies on.
    const jobs: { inputs: Input[]; outcomes: Promise<Outcome[]> }[] = [];
    let pending = 0;
    let failed = false;
    const active = scorer;
    const output = writer;
    const start = (inputs: Input[]) => {
      const outcomes = active.score(inputs).catch((err: unknown) => {
        failed = true; // stop starting more; what came before is still written
        throw inputs.length === 1 ? new InputFailed(inputs[0]!, err) : err;
      });
      outcomes.catch(() => undefined); // handled when it reaches the head
      jobs.push({ inputs, outcomes });
      pending += inputs.length;
    };
    const writeHead = async () => {
      const job = jobs.shift()!;
      for (const outcome of await job.outcomes) {
        await output.write(outcome.line);
        summary.lines++;
        if (outcome.deadLettered) summary.deadLetters++;
        else summary.results++;
      }
      pending -= job.inputs.length;
      bar.update(
        summary.lines,
        summary.deadLetters > 0 ? `${summary.deadLetters} dead-lettered` : '',
      );
    };

    const { idField } = codec;
    let chunk: Input[] = [];
    for await (const { index, line, record } of readRecords(file, {
      type: codec.requestType,
      optionalFields: [idField],
      skip: summary.resumedFrom,
    })) {
      if (io.stop?.aborted || failed) break;
      const given = record[idField];
      const id =
        given === undefined || given === null || given === '' ? `${base}:${index}` : String(given);
      chunk.push({ index, line, id, record: { ...record, [idField]: id } });
      if (chunk.length >= active.unit) {
        start(chunk);
        chunk = [];
      }
      while (pending >= concurrency) await writeHead();
    }
    if (chunk.length > 0 && !io.stop?.aborted && !failed) start(chunk);
    while (jobs.length > 0) await writeHead();

    summary.seconds = bar.elapsed();
    bar.stop();
    if (summary.lines < summary.total) {
      io.stderr(
        `interrupted: ${out} has ${summary.lines} of ${summary.total} lines; run the same command again to resume\n`,
      );
      return EXIT_INTERRUPTED;
    }
    const rate = (summary.lines - summary.resumedFrom) / Math.max(summary.seconds, 1e-3);
    io.stdout(
      `scored ${summary.lines - summary.resumedFrom} records of ${file} ${flags.local ? 'locally' : `through ${topic}`} in ${duration(summary.seconds)} (${Math.round(rate)}/s): ${summary.results} results, ${summary.deadLetters} dead letters${summary.resumedFrom > 0 ? ` (${summary.resumedFrom} were already in the output)` : ''} → ${out}\n`,
    );
    return EXIT_OK;
  } catch (err) {
    progress?.stop();
    const stopped = io.kill?.aborted || (isScoringError(err) && err.code === 'CLIENT_CLOSED');
    const cause = err instanceof InputFailed ? err.failure : err;
    if (stopped || (isScoringError(cause) && cause.code === 'CLIENT_CLOSED')) {
      io.stderr(
        `interrupted: ${out} has ${summary.lines} of ${summary.total} lines; run the same command again to resume\n`,
      );
      return EXIT_INTERRUPTED;
    }
    if (err instanceof InputFailed) {
      io.stderr(
        `streamscore: record ${err.input.index} (${base}:${err.input.line}, id ${err.input.id}) failed:\n`,
      );
    }
    const code = failure(cause, io);
    if (summary.total > 0 && writer !== null) {
      io.stderr(
        `${out} has ${summary.lines} of ${summary.total} lines; run the same command again to resume\n`,
      );
    }
    return code === EXIT_OK ? EXIT_FAILED : code;
  } finally {
    io.kill?.removeEventListener('abort', onKill);
    await writer?.close().catch((err: unknown) => log.error({ err }, 'closing the output failed'));
    await scorer?.close().catch((err: unknown) => log.warn({ err }, 'closing the scorer failed'));
  }
}

/** Adds `streamscore score` to the program. */
export function registerScoreCommand(program: Command): Command {
  return withConfigFlags(program.command('score'))
    .description(
      'score every record of a file (.jsonl/.ndjson, .csv with a header row, .avro) through the running worker (or --local) and write one JSON line per record, in input order; resumable',
    )
    .argument('<file>', 'records to score: JSON lines, CSV or an Avro container file')
    .option('-t, --topic <topic>', 'request topic (default: the first of topics.requests)')
    .option('-o, --out <file>', 'output file (default: <file without extension>.results.jsonl)')
    .option('--local', 'score in this process with the configured model, without Kafka')
    .option(
      '--concurrency <n>',
      'records in flight (sent and not yet written)',
      positiveInt,
      DEFAULT_CONCURRENCY,
    )
    .option(
      '--timeout <ms>',
      'longest wait for one answer (Kafka)',
      positiveInt,
      DEFAULT_TIMEOUT_MS,
    )
    .option('--log-level <level>', 'log level on stderr', 'warn')
    .addHelpText(
      'after',
      '\nEach output line is the result record as JSON (bytes as base64), or {"<id>": …, "error": {"code", "message"}} for a dead letter.\nInterrupted (Ctrl-C, kill) or stopped by a timeout: run the same command again; it appends after the complete lines already written.\nExit status: 0 done, 1 failed, 78 configuration error, 130 interrupted.',
    )
    .action(async (file: string, flags: ScoreFlags) => {
      const signals = signalsFromProcess();
      const code = await runScore(file, flags, {
        stdout: (text) => process.stdout.write(text),
        stderr: (text) => process.stderr.write(text),
        isTTY: process.stderr.isTTY === true,
        stop: signals.stop,
        kill: signals.kill,
      });
      signals.dispose();
      process.exit(code);
    });
}
