/**
 * `streamscore replay`: scores a range of a request topic again into a chosen result topic, e.g.
 * with a new model version (`--model-version`), through the service's InferenceWorker (the local
 * pipeline with a Kafka sink): the same validation, routing and dead letters as the service.
 *
 * The range is half-open in every partition: from `--from` (inclusive) up to `--to` (exclusive).
 * Times become offsets through the broker (ListOffsets by timestamp: the first record at or after
 * that time), so `--to <time>` replays the records written before it. Records are read by a
 * consumer of a throwaway group that commits nothing (the workers' group is never touched), and
 * the answers are produced with acks=all: results to `--into`, dead letters to
 * topics.deadLetter (topics.failed for the "failed" category).
 *
 * Exit codes: 0 every record in range was answered or dead-lettered, 1 not (or Kafka failed),
 * 78 a configuration error (as the rest of the CLI).
 */
import { randomBytes } from 'node:crypto';
import { Command, InvalidArgumentError, Option } from 'commander';
import cliProgress from 'cli-progress';
import { pino } from 'pino';
import type { Admin, Kafka, KafkaMessage } from 'kafkajs';
import { loadConfig, requireBrokers, type StreamscoreConfig } from '../config/index.js';
import { isStreamscoreError, StreamscoreError } from '../errors.js';
import { checkTopics, createKafka, KafkajsSink, toRecord } from '../kafka/kafkajs.js';
import { createLogger, type Logger } from '../telemetry/logger.js';
import { HEADER } from '../worker/headers.js';
import { startPipeline, type Answer } from './local-pipeline.js';
import { withConfigFlags } from './flags.js';

/** Where `--from` / `--to` point, before it is resolved per partition. */
export type Position =
  | { kind: 'offset'; offset: bigint }
  | { kind: 'time'; ms: number }
  | { kind: 'earliest' }
  | { kind: 'latest' };

/** Epoch milliseconds from this many digits on (2001-09-09); fewer digits are an offset. */
const EPOCH_MS_DIGITS = 13;

/**
 * `earliest`, `latest`, an offset (up to 12 digits), epoch milliseconds (13 digits or more) or
 * an ISO 8601 time (`2024-05-01T12:00:00Z`; without a zone it is local time, as Date reads it).
 */
export function parsePosition(text: string): Position {
  const value = text.trim();
  if (value === 'earliest' || value === 'latest') return { kind: value };
  if (/^\d+$/.test(value)) {
    return value.length >= EPOCH_MS_DIGITS
      ? { kind: 'time', ms: Number(value) }
      : { kind: 'offset', offset: BigInt(value) };
  }
  const ms = /^\d{4}-\d{2}-\d{2}/.test(value) ? Date.parse(value) : NaN;
  if (Number.isNaN(ms)) {
    throw new InvalidArgumentError(
      'expected an offset, an ISO 8601 time, epoch milliseconds (13+ digits), earliest or latest',
    );
  }
  return { kind: 'time', ms };
}

function partitionList(text: string): number[] {
  const parts = text.split(',').map((p) => p.trim());
  if (parts.some((p) => !/^\d+$/.test(p))) {
    throw new InvalidArgumentError('expected partition numbers, e.g. 0,1,3');
  }
  return [...new Set(parts.map(Number))].sort((a, b) => a - b);
}

export interface ReplayFlags {
  topic: string;
  from: Position;
  /** Default: latest (each partition's end when the replay starts). */
  to?: Position;
  into: string;
  config?: string;
  brokers?: string;
  /** Overrides model.version; the canary (model.canary) is then off, so V answers everything. */
  modelVersion?: string;
  /** Default: every partition of the topic. */
  partitions?: number[];
  json?: boolean;
  /** Logs go to stderr at this level (default error: the summary says what happened). */
  logLevel?: string;
}

export interface ReplayIo {
  stdout: (text: string) => void;
  stderr: (text: string) => void;
  /** A TTY gets a progress bar on stderr; otherwise a plain line every `progressEveryMs`. */
  isTTY: boolean;
  /** Default 5 s. */
  progressEveryMs?: number;
  /** Defaults to `process.env`. */
  env?: NodeJS.ProcessEnv;
  /** Default: pino on stderr at `--log-level`. */
  log?: Logger;
  /** Aborting stops reading; what was read is answered, then the summary is printed. */
  signal?: AbortSignal;
}

/** Exit code for a configuration error (EX_CONFIG), as the rest of the CLI. */
const EXIT_CONFIG = 78;

/** One partition's half-open range [from, to) and what became of its records. */
export interface PartitionSummary {
  partition: number;
  from: string;
  /** Exclusive. */
  to: string;
  read: number;
  answered: number;
  deadLettered: number;
  /** Read, but neither answered nor dead-lettered (nothing could be sent, or stopped early). */
  unanswered: number;
  /** Every offset up to `to` was read. */
  complete: boolean;
}

export interface ReplaySummary {
  topic: string;
  into: string;
  deadLetterTopic: string;
  model: { name: string; version: string };
  /** Always true: `to` is the first offset not replayed. */
  toExclusive: true;
  partitions: PartitionSummary[];
  ok: boolean;
}

/** Runs `streamscore replay` and returns its exit code. */
export async function runReplay(flags: ReplayFlags, io: ReplayIo): Promise<number> {
  let config: StreamscoreConfig;
  try {
    config = loadConfig({
      file: flags.config,
      env: io.env ?? process.env,
      overrides: {
        ...(flags.brokers ? { kafka: { brokers: splitList(flags.brokers) } } : {}),
        ...(flags.modelVersion ? { model: { version: flags.modelVersion, canary: null } } : {}),
      },
    });
    requireBrokers(config);
    if (!config.topics.requests.includes(flags.topic)) {
      // Its codec (framing, field mapping) and default model come from the configuration.
      throw new StreamscoreError(
        'CONFIG_INVALID',
        `--topic ${flags.topic} is not one of topics.requests (${config.topics.requests.join(', ')}); replay reads a request topic as the worker does`,
        { details: { key: 'topics.requests' } },
      );
    }
  } catch (err) {
    return failure(err, io);
  }
  const log = io.log ?? createLogger(flags.logLevel ?? 'error', pino.destination(2));
  try {
    const summary = await replay(config, flags, io, log);
    io.stdout(flags.json ? JSON.stringify(summary, null, 2) + '\n' : summaryText(summary));
    return summary.ok ? 0 : 1;
  } catch (err) {
    return failure(err, io);
  }
}

async function replay(
  config: StreamscoreConfig,
  flags: ReplayFlags,
  io: ReplayIo,
  log: Logger,
): Promise<ReplaySummary> {
  const kafka = createKafka(config.kafka, log);
  await checkTopics(kafka, [
    flags.topic,
    flags.into,
    config.topics.deadLetter,
    ...(config.topics.failed ? [config.topics.failed] : []),
  ]);
  const resolved = await resolveRanges(kafka, flags);
  const { ranges } = resolved;
  const stats = new Map(
    ranges.map((r) => [
      r.partition,
      {
        partition: r.partition,
        from: r.from.toString(),
        to: r.to.toString(),
        read: 0,
        answered: 0,
        deadLettered: 0,
        unanswered: 0,
        complete: r.from >= r.to,
      } satisfies PartitionSummary,
    ]),
  );
  const sink = new KafkajsSink(kafka, { compression: config.kafka.compression, log });
  let pipeline;
  try {
    await sink.connect();
    pipeline = await startPipeline(config, { log, sink, resultTopic: flags.into });
  } catch (err) {
    await sink.close();
    throw err;
  }
  const total = ranges.reduce((sum, r) => sum + Number(r.to - r.from), 0);
  const progress = startProgress(io, total, () => {
    let read = 0;
    let answered = 0;
    let deadLettered = 0;
    for (const s of stats.values()) {
      read += s.read;
      answered += s.answered;
      deadLettered += s.deadLettered;
    }
    return { read, answered, deadLettered };
  });
  try {
    await readRanges(kafka, config, flags.topic, resolved, io.signal, log, {
      onRecords: async (partition, records) => {
        const s = stats.get(partition)!;
        s.read += records.length;
        s.unanswered += records.length;
        progress.update();
        const answers = await pipeline.submit(records);
        for (const answer of answers) count(s, answer);
        progress.update();
      },
      onComplete: (partition) => {
        stats.get(partition)!.complete = true;
      },
    });
  } finally {
    progress.stop();
    await pipeline.close();
  }
  const partitions = [...stats.values()];
  return {
    topic: flags.topic,
    into: flags.into,
    deadLetterTopic: config.topics.deadLetter,
    model: { name: pipeline.model.name, version: pipeline.model.version },
    toExclusive: true,
    partitions,
    ok: partitions.every((p) => p.complete && p.unanswered === 0),
  };
}

function count(s: PartitionSummary, { sent }: Answer): void {
  if (!sent) return; // left out: nothing could be sent; stays unanswered
  s.unanswered--;
  if (sent.headers[HEADER.errorCode] === undefined) s.answered++;
  else s.deadLettered++;
}

interface Ranges {
  /** The selected partitions' ranges. */
  ranges: Range[];
  /** Every partition of the topic. */
  partitions: number[];
}

interface Range {
  partition: number;
  /** First offset replayed. */
  from: bigint;
  /** First offset not replayed. */
  to: bigint;
}

/** Each selected partition's [from, to), resolved through the broker and kept within its log. */
async function resolveRanges(kafka: Kafka, flags: ReplayFlags): Promise<Ranges> {
  const admin = kafka.admin();
  await admin.connect();
  try {
    const bounds = await admin.fetchTopicOffsets(flags.topic);
    const all = bounds.map((b) => b.partition).sort((a, b) => a - b);
    const wanted = flags.partitions ?? all;
    const unknown = wanted.filter((p) => !all.includes(p));
    if (unknown.length > 0) {
      throw new StreamscoreError(
        'CONFIG_INVALID',
        `--partitions ${unknown.join(',')}: ${flags.topic} has partitions ${all.join(',')}`,
        { details: { key: '--partitions' } },
      );
    }
    const from = await offsetsAt(admin, flags.topic, flags.from);
    const to = await offsetsAt(admin, flags.topic, flags.to ?? { kind: 'latest' });
    const ranges = wanted.map((partition) => {
      const { low, high } = bounds.find((b) => b.partition === partition)!;
      const clamp = (offset: bigint) => {
        const [lo, hi] = [BigInt(low), BigInt(high)];
        return offset < lo ? lo : offset > hi ? hi : offset;
      };
      const start = clamp(from(partition));
      const end = clamp(to(partition));
      return { partition, from: start, to: end < start ? start : end };
    });
    return { ranges, partitions: all };
  } finally {
    await admin.disconnect();
  }
}

/** A position as an offset per partition, before clamping to the partition's log. */
async function offsetsAt(
  admin: Admin,
  topic: string,
  position: Position,
): Promise<(partition: number) => bigint> {
  switch (position.kind) {
    case 'offset':
      return () => position.offset;
    case 'earliest':
      return () => 0n;
    case 'latest':
      // Clamped to the end of each partition.
      return () => BigInt(Number.MAX_SAFE_INTEGER);
    case 'time': {
      // The first offset whose timestamp is at or after the time (the end if there is none).
      const offsets = await admin.fetchTopicOffsetsByTimestamp(topic, position.ms);
      return (partition) => BigInt(offsets.find((o) => o.partition === partition)!.offset);
    }
  }
}

interface RangeHandlers {
  /** Records of one partition in offset order, within its range; resolve once answered. */
  onRecords(partition: number, records: ReturnType<typeof toRecord>[]): Promise<void>;
  /** Everything of the partition's range was read (and handed to onRecords). */
  onComplete(partition: number): void;
}

/** Records handed on at a time; the consumer heartbeats between them. */
const CHUNK = 500;

/**
 * Reads each range with a consumer of a throwaway group (never committing) that seeks to the
 * range's start and pauses a partition once its range is read. Resolves when every range is read
 * or `signal` aborts.
 */
async function readRanges(
  kafka: Kafka,
  config: StreamscoreConfig,
  topic: string,
  { ranges, partitions }: Ranges,
  signal: AbortSignal | undefined,
  log: Logger,
  handlers: RangeHandlers,
): Promise<void> {
  const open = new Map(ranges.filter((r) => r.from < r.to).map((r) => [r.partition, r]));
  if (open.size === 0 || signal?.aborted) return;
  const groupId = `streamscore-replay-${Date.now().toString(36)}-${randomBytes(4).toString('hex')}`;
  const consumer = kafka.consumer({
    groupId,
    allowAutoTopicCreation: false,
    sessionTimeout: config.kafka.sessionTimeoutMs,
    maxWaitTimeInMs: config.kafka.fetchMaxWaitMs,
    maxBytesPerPartition: config.kafka.fetchMaxBytesPerPartition,
  });
  /** Per partition: the next offset to hand on (a record seen twice is skipped). */
  const next = new Map([...open].map(([p, r]) => [p, r.from]));
  /** A batch was left part-way (stopping): its partition must not count as read to its end. */
  let interrupted = false;
  try {
    await consumer.connect();
    await consumer.subscribe({ topics: [topic], fromBeginning: true });
    await new Promise<void>((resolve, reject) => {
      const complete = (partition: number) => {
        if (!open.delete(partition)) return;
        consumer.pause([{ topic, partitions: [partition] }]);
        handlers.onComplete(partition);
        if (open.size === 0) resolve();
      };
      /**
       * A fetched batch of the partition was handled up to `lastOffset`. Batches of control
       * records or aborted records only never reach eachBatch, so this also runs on
       * END_BATCH_PROCESS, which kafkajs emits for them too (and after every eachBatch).
       */
      const reached = (partition: number, lastOffset: string) => {
        const range = open.get(partition);
        if (!range || interrupted || signal?.aborted) return;
        if (BigInt(lastOffset) >= range.to - 1n) complete(partition);
      };
      signal?.addEventListener('abort', () => resolve(), { once: true });
      // On every (re)join, before anything is fetched: the group has no offsets, so each open
      // partition starts where its range still starts; the other partitions are not read.
      consumer.on(consumer.events.GROUP_JOIN, () => {
        try {
          for (const [partition] of open) {
            consumer.seek({ topic, partition, offset: next.get(partition)!.toString() });
          }
          const others = partitions.filter((p) => !open.has(p));
          if (others.length > 0) consumer.pause([{ topic, partitions: others }]);
        } catch (err) {
          reject(err as Error);
        }
      });
      consumer.on(consumer.events.CRASH, ({ payload }) => {
        if (!payload.restart) reject(payload.error);
      });
      consumer.on(consumer.events.END_BATCH_PROCESS, ({ payload }) => {
        if (payload.topic === topic) reached(payload.partition, payload.lastOffset);
      });
      consumer
        .run({
          autoCommit: false,
          partitionsConsumedConcurrently: Math.min(open.size, 16),
          eachBatch: async ({ batch, heartbeat, isRunning }) => {
            const range = open.get(batch.partition);
            if (!range || batch.topic !== topic) return;
            const wanted = batch.messages.filter((m: KafkaMessage) => {
              const offset = BigInt(m.offset);
              return offset >= next.get(batch.partition)! && offset < range.to;
            });
            for (let i = 0; i < wanted.length; i += CHUNK) {
              if (!isRunning() || signal?.aborted) {
                interrupted = true;
                return;
              }
              const chunk = wanted.slice(i, i + CHUNK);
              await handlers.onRecords(
                batch.partition,
                chunk.map((m) => toRecord(topic, batch.partition, m)),
              );
              next.set(batch.partition, BigInt(chunk.at(-1)!.offset) + 1n);
              await heartbeat();
            }
            reached(batch.partition, batch.lastOffset());
          },
        })
        .catch(reject);
    });
  } finally {
    await consumer.disconnect();
    await deleteGroup(kafka, groupId, log);
  }
}

/** The throwaway group is empty once its consumer left; remove it (best effort). */
async function deleteGroup(kafka: Kafka, groupId: string, log: Logger): Promise<void> {
  const admin = kafka.admin();
  try {
    await admin.connect();
    await admin.deleteGroups([groupId]);
  } catch (err) {
    // Left behind, an empty group without offsets expires on its own (offsets.retention.minutes).
    log.debug({ err, groupId }, 'replay group not deleted');
  } finally {
    await admin.disconnect();
  }
}

interface Progress {
  update(): void;
  stop(): void;
}

/** A bar on a TTY; otherwise a plain line every progressEveryMs and at the end. */
function startProgress(
  io: ReplayIo,
  total: number,
  counts: () => { read: number; answered: number; deadLettered: number },
): Progress {
  if (io.isTTY) {
    const bar = new cliProgress.SingleBar(
      {
        stream: process.stderr,
        format:
          'replay [{bar}] {percentage}% | {value}/{total} read | {answered} answered | {deadLettered} dead-lettered | {eta_formatted} left',
        hideCursor: true,
      },
      cliProgress.Presets.shades_classic,
    );
    bar.start(total, 0, { answered: 0, deadLettered: 0 });
    return {
      update() {
        const c = counts();
        bar.update(c.read, { answered: c.answered, deadLettered: c.deadLettered });
      },
      stop() {
        this.update();
        bar.stop();
      },
    };
  }
  const line = () => {
    const c = counts();
    io.stderr(
      `replay: ${c.read}/${total} read, ${c.answered} answered, ${c.deadLettered} dead-lettered\n`,
    );
  };
  const timer = setInterval(line, io.progressEveryMs ?? 5000);
  timer.unref();
  return {
    update() {},
    stop() {
      clearInterval(timer);
      line();
    },
  };
}

function summaryText(summary: ReplaySummary): string {
  const rows = [
    ['partition', 'from', 'to (excl.)', 'read', 'answered', 'dead-lettered', 'unanswered', ''],
    ...summary.partitions.map((p) => [
      String(p.partition),
      p.from,
      p.to,
      String(p.read),
      String(p.answered),
      String(p.deadLettered),
      String(p.unanswered),
      p.complete ? '' : 'range not read to its end',
    ]),
  ];
  const sum = (key: 'read' | 'answered' | 'deadLettered' | 'unanswered') =>
    summary.partitions.reduce((n, p) => n + p[key], 0);
  return [
    `replayed ${summary.topic} into ${summary.into} with ${summary.model.name} version ${summary.model.version}; dead letters to ${summary.deadLetterTopic}`,
    'range per partition: from (inclusive) to (exclusive)',
    table(rows),
    `total: ${sum('read')} read, ${sum('answered')} answered, ${sum('deadLettered')} dead-lettered, ${sum('unanswered')} unanswered`,
    summary.ok
      ? 'every record in range was answered or dead-lettered'
      : 'NOT every record in range was answered or dead-lettered',
    '',
  ].join('\n');
}

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return rows
    .map((r) =>
      r
        .map((cell, i) => cell.padEnd(widths[i]!))
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}

function splitList(text: string): string[] {
  return text
    .split(',')
    .map((b) => b.trim())
    .filter((b) => b.length > 0);
}

function failure(err: unknown, io: ReplayIo): number {
  if (isStreamscoreError(err)) {
    io.stderr(`streamscore: ${err.code}: ${err.message}\n`);
    return err.code.startsWith('CONFIG') ? EXIT_CONFIG : 1;
  }
  io.stderr(`streamscore: ${(err as Error)?.stack ?? String(err)}\n`);
  return 1;
}

/** Adds `streamscore replay` to the program. */
export function registerReplayCommand(program: Command): Command {
  return withConfigFlags(program.command('replay'))
    .description(
      'score a range of a request topic again into a result topic (e.g. with another model version), through the same worker as `run`; dead letters go to topics.deadLetter',
    )
    .requiredOption('-t, --topic <topic>', 'request topic to read')
    .requiredOption(
      '--from <position>',
      'start of the range, inclusive: an offset (the same in every partition), an ISO 8601 time (the first record at or after it), epoch milliseconds (13 or more digits) or "earliest"',
      parsePosition,
    )
    .addOption(
      new Option(
        '--to <position>',
        'end of the range, EXCLUSIVE: the first offset not replayed, or a time (records written before it are replayed); also epoch milliseconds or "latest" (the end of each partition when the replay starts)',
      )
        .argParser(parsePosition)
        .default({ kind: 'latest' }, 'latest'),
    )
    .requiredOption('--into <topic>', 'result topic to write the new results to')
    .option(
      '--model-version <version>',
      'score with this version of model.name instead of model.version (the canary is then off)',
    )
    .option('--partitions <list>', 'only these partitions, e.g. 0,1 (default: all)', partitionList)
    .option('--json', 'print the summary as JSON')
    .option('--log-level <level>', 'log level of the worker on stderr', 'error')
    .addHelpText(
      'after',
      '\nExit status: 0 when every record in range was answered or dead-lettered, 1 otherwise, 78 for a configuration error.\nThe range is [from, to) in each partition; the summary lists it per partition.',
    )
    .action(async (flags: ReplayFlags) => {
      const controller = new AbortController();
      const stop = () => controller.abort();
      process.once('SIGINT', stop);
      process.once('SIGTERM', stop);
      const code = await runReplay(flags, {
        stdout: (text) => process.stdout.write(text),
        stderr: (text) => process.stderr.write(text),
        isTTY: process.stderr.isTTY === true,
        signal: controller.signal,
      });
      process.exit(code);
    });
}
