/**
 * `npm run bench`: streamscore against its ceilings, on a real Kafka broker.
 *
 * For each benchmark model (bench/models.ts) it pre-produces N Avro requests (float32 `bytes`)
 * to a fresh 4-partition topic, then measures, one phase after another:
 *   1. the I/O ceiling: a kafkajs consumer group (eachBatch) copies the request bytes to a fresh
 *      topic (sendBatch, acks -1), no decode, no model;
 *   2. the compute ceiling: the model runner's predict on prepared batches, at the best power-of-
 *      two batch size in 1..256, no Kafka;
 *   3. a naive worker: eachMessage → decode → predict(batch of 1) → encode → awaited send;
 *   4. streamscore with its defaults (startService, the real worker, in this process);
 * then, with `streamscore run` started as its own process (STREAMSCORE_* variables), end-to-end
 * latency at 25/50/75 % of streamscore's measured saturation rate, the worker process's peak RSS
 * (/proc VmHWM), and with --overload, 3× the saturation rate for 60 s and the time to drain.
 *
 * Every throughput is records / (last acknowledged produce − first record handed to the
 * consumer): consumer-group joins, model loading and warm-up are not counted (bench/README.md).
 * Writes bench/results/<date>-<sha>.json, latest.json and latest.svg.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { mkdir, rename, writeFile } from 'node:fs/promises';
import os from 'node:os';
import {
  PerformanceObserver,
  constants as perfConstants,
  type PerformanceEntry,
} from 'node:perf_hooks';
import v8 from 'node:v8';
import vm from 'node:vm';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { Command, InvalidArgumentError, Option } from 'commander';
import { Partitioners, type Consumer, type Kafka, type KafkaMessage, type Producer } from 'kafkajs';
import { AvroCodec } from '../src/codec/avro.js';
import type { InferenceResult } from '../src/codec/types.js';
import { loadConfig, type StreamscoreConfig } from '../src/config/index.js';
import { createKafka, ensureTopics } from '../src/kafka/kafkajs.js';
import { startLocalBroker, type LocalBroker } from '../src/kafka/local-broker.js';
import { startLocalJaeger, type LocalJaeger } from '../src/telemetry/local-jaeger.js';
import { selectBackend } from '../src/model/backend.js';
import { mulberry32 } from '../src/model/digits-data.js';
import { loadModel } from '../src/model/repository.js';
import type { ModelRunner } from '../src/model/types.js';
import { startService, type Service } from '../src/service.js';
import { createLogger, silentLogger, type Logger } from '../src/telemetry/logger.js';
import { percentile } from '../src/telemetry/stats.js';
import { median, medianInterval, type MedianInterval } from './median-interval.js';
import {
  BENCH_MODELS,
  BENCH_MODEL_NAMES,
  BENCH_REPOSITORY,
  BENCH_VERSION,
  benchModelDir,
  ensureBenchModels,
  exampleSize,
  type BenchModelName,
  type BenchModelSpec,
} from './models.js';
import { startDiscardingReceiver } from './otlp-sink.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const PARTITIONS = 4;
/** Produce requests of at most this many value bytes: under the broker's 1 MiB batch limit. */
const CHUNK_BYTES = 512 * 1024;
/** Distinct random examples cycled through by every producer (values do not matter here). */
const POOL_SIZE = 64;
const PACED_TICK_MS = 5;
/** Paced producers skip a tick while this many sends are unacknowledged (bounds our memory). */
const PACED_MAX_PENDING = 64;
const LOAD_LEVELS = [25, 50, 75] as const;
const GiB = 1024 ** 3;

/** Epoch milliseconds with sub-millisecond resolution: the worker's clock (src/batching/clock.ts). */
const now = () => performance.timeOrigin + performance.now();
const say = (text = '') => process.stdout.write(text + '\n');

// ─── options ────────────────────────────────────────────────────────────────────────────────────

interface BenchOptions {
  models: BenchModelName[];
  requests: number;
  quick: boolean;
  overload: boolean;
  overloadSeconds: number;
  loadSeconds: number;
  naiveSeconds: number;
  /** Rounds of the in-process throughput phase; the median reported. */
  rounds: number;
  out: string;
  /** Only redraw `<out>/latest.svg` from this results file. */
  render: string | undefined;
  /** Only the tracing phase (untraced and traced workers taking turns), this many times. */
  tracingOnly: number | undefined;
  /**
   * With tracingOnly: the second worker is configured as the traced one but samples nothing
   * (tracing off), so the "cost" is the method's own bias and scatter (an A/A measurement).
   */
  calibrate: boolean;
  /** With tracingOnly: one worker, its tracing switched off and on (tracingSwitched). */
  switched: boolean;
}

function parseOptions(argv: string[]): BenchOptions {
  const positive = (text: string) => {
    const value = Number(text);
    if (!Number.isFinite(value) || value <= 0)
      throw new InvalidArgumentError('expected a number > 0');
    return value;
  };
  const positiveInteger = (text: string) => {
    const n = Number(text);
    if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError('expected an integer ≥ 1');
    return n;
  };
  const program = new Command()
    .name('npm run bench --')
    .description(
      'streamscore against the I/O ceiling, the compute ceiling and a naive per-message worker, on a real Kafka broker (bench/README.md)',
    )
    .option(
      '--models <list>',
      `comma-separated, from ${BENCH_MODEL_NAMES.join(', ')}`,
      (text: string) => {
        const names = text
          .split(',')
          .map((n) => n.trim())
          .filter(Boolean);
        const unknown = names.filter((n) => !(BENCH_MODEL_NAMES as readonly string[]).includes(n));
        if (unknown.length > 0 || names.length === 0)
          throw new InvalidArgumentError(`unknown model(s) ${unknown.join(', ') || '(none)'}`);
        return names as BenchModelName[];
      },
      [...BENCH_MODEL_NAMES],
    )
    .option(
      '--requests <n>',
      `multiplier of the pre-produced requests per model (${BENCH_MODEL_NAMES.map((n) => `${n} ${BENCH_MODELS[n].defaultRequests}`).join(', ')})`,
      positive,
      1,
    )
    .option(
      '--quick',
      'a smoke run: 5 % of the requests, 2 s loads; results go to .cache/bench/results',
      false,
    )
    .option(
      '--overload',
      'also offer 3× the saturation rate (takes minutes: load plus drain)',
      false,
    )
    .option('--overload-seconds <s>', 'duration of the overload', positive, 60)
    .addOption(
      new Option('--load-seconds <s>', 'duration of each latency load').argParser(positive),
    )
    .addOption(
      new Option('--naive-seconds <s>', 'time budget of the naive worker').argParser(positive),
    )
    .addOption(
      new Option(
        '--rounds <n>',
        'rounds of the in-process streamscore phase (the median reported)',
      ).argParser(positiveInteger),
    )
    .option(
      '--out <dir>',
      'results folder (default bench/results, or .cache/bench/results with --quick)',
    )
    .option('--render <json>', 'measure nothing: redraw <out>/latest.svg from a results file')
    .addOption(
      new Option(
        '--tracing-only <runs>',
        "only tracing's cost (an untraced and a traced worker taking turns, 128 per batch), measured <runs> times; writes <out>/tracing-turns-*.json",
      ).argParser(positiveInteger),
    )
    .option(
      '--switched',
      'with --tracing-only: one traced worker whose tracing is paused and resumed over HTTP, stretch by stretch, instead of two workers taking turns; writes <out>/tracing-switched-*.json',
    )
    .option(
      '--calibrate',
      "with --tracing-only: the second worker gets the OTLP endpoint but samples nothing (tracing off), so the cost measured is the method's own bias and scatter (A/A); writes <out>/tracing-turns-calibration-*.json",
    );
  program.parse(argv);
  const o = program.opts<{
    models: BenchModelName[];
    requests: number;
    quick: boolean;
    overload: boolean;
    overloadSeconds: number;
    loadSeconds?: number;
    naiveSeconds?: number;
    rounds?: number;
    out?: string;
    render?: string;
    tracingOnly?: number;
    calibrate?: boolean;
    switched?: boolean;
  }>();
  if (o.calibrate && o.tracingOnly === undefined) {
    program.error('error: --calibrate measures the tracing phase alone: add --tracing-only <runs>');
  }
  if (o.switched && o.tracingOnly === undefined) {
    program.error('error: --switched measures the tracing phase alone: add --tracing-only <runs>');
  }
  return {
    models: o.models,
    requests: o.requests * (o.quick ? 0.05 : 1),
    quick: o.quick,
    overload: o.overload,
    overloadSeconds: o.overloadSeconds,
    loadSeconds: o.loadSeconds ?? (o.quick ? 2 : 8),
    naiveSeconds: o.naiveSeconds ?? (o.quick ? 2 : 10),
    rounds: o.rounds ?? (o.quick ? 1 : 3),
    out: path.resolve(
      ROOT,
      o.out ?? (o.quick ? path.join('.cache', 'bench', 'results') : path.join('bench', 'results')),
    ),
    render: o.render,
    tracingOnly: o.tracingOnly,
    calibrate: o.calibrate ?? false,
    switched: o.switched ?? false,
  };
}

// ─── measuring helpers ──────────────────────────────────────────────────────────────────────────

/** Samples this process's RSS; windows report the peak seen while they were open. */
class RssSampler {
  private readonly windows = new Set<{ peak: number }>();
  private readonly timer: NodeJS.Timeout;
  maxBytes = 0;

  constructor(intervalMs: number) {
    this.timer = setInterval(() => this.sample(), intervalMs);
    this.timer.unref();
  }

  sample(): number {
    const rss = process.memoryUsage.rss();
    this.maxBytes = Math.max(this.maxBytes, rss);
    for (const w of this.windows) w.peak = Math.max(w.peak, rss);
    return rss;
  }

  /** Starts a window; the returned function closes it and gives its peak in MiB. */
  window(): () => number {
    const w = { peak: 0 };
    this.windows.add(w);
    this.sample();
    return () => {
      this.sample();
      this.windows.delete(w);
      return w.peak / 2 ** 20;
    };
  }

  stop(): void {
    clearInterval(this.timer);
  }
}

/**
 * CPU time of this process, and of the local broker's JVM and an OTLP receiver (read from /proc),
 * over a window, in cores.
 */
/** CPU seconds the calling thread has run (Linux: /proc/thread-self/schedstat); null elsewhere. */
function threadCpuSeconds(): number | null {
  try {
    return Number(readFileSync('/proc/thread-self/schedstat', 'utf8').split(' ')[0]) / 1e9;
  } catch {
    return null;
  }
}

/**
 * Garbage-collection pauses of this process's main thread over a window: every kind, and the
 * full (mark-compact) ones alone, in ms. Scavenges run partly on helper threads, but the main
 * thread waits for them: their duration is time the worker's event loop did not run.
 */
function gcMeter(): () => { pause_ms: number; major_pause_ms: number; major: number } {
  let pause = 0;
  let majorPause = 0;
  let major = 0;
  const observer = new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) {
      pause += entry.duration;
      const kind = (entry as PerformanceEntry & { detail?: { kind?: number } }).detail?.kind;
      if (kind === perfConstants.NODE_PERFORMANCE_GC_MAJOR) {
        majorPause += entry.duration;
        major++;
      }
    }
  });
  observer.observe({ entryTypes: ['gc'] });
  return () => {
    observer.disconnect();
    return { pause_ms: round(pause, 1), major_pause_ms: round(majorPause, 1), major };
  };
}

function cpuMeter(
  brokerPid: number | undefined,
  receiverPid?: number,
): () => Throughput['cpu_cores'] {
  const t0 = now();
  const c0 = process.cpuUsage();
  const b0 = procCpuSeconds(brokerPid);
  const r0 = procCpuSeconds(receiverPid);
  const perSecond = (before: number | null, after: number | null, wall: number) =>
    before === null || after === null ? null : round((after - before) / wall, 2);
  return () => {
    const wall = (now() - t0) / 1000;
    const c = process.cpuUsage(c0);
    return {
      bench: round((c.user + c.system) / 1e6 / wall, 2),
      broker: perSecond(b0, procCpuSeconds(brokerPid), wall),
      ...(receiverPid === undefined
        ? {}
        : { receiver: perSecond(r0, procCpuSeconds(receiverPid), wall) }),
    };
  };
}

/**
 * A full garbage collection, so the heap earlier phases left behind (e.g. 100k records through
 * kafkajs) is not counted as the worker's. The flag can be set at run time; `gc` then exists in
 * new contexts.
 */
v8.setFlagsFromString('--expose-gc');
const collectGarbage = vm.runInNewContext('gc') as () => void;

function round(value: number, digits = 0): number {
  const f = 10 ** digits;
  return Math.round(value * f) / f;
}

function deferred<T = void>() {
  let resolve!: (value: T) => void;
  let reject!: (err: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

/** Resolves `promise`, or rejects naming `what` after `ms`. */
async function within<T>(ms: number, what: string, promise: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`${what} did not finish within ${Math.round(ms / 1000)} s`)),
      ms,
    );
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Polls `done()` every `everyMs` until it holds; rejects naming `what` after `ms`. */
async function until(
  ms: number,
  what: string,
  done: () => boolean,
  everyMs = 2,
  progress?: () => string,
): Promise<number> {
  const deadline = now() + ms;
  while (!done()) {
    if (now() > deadline) {
      throw new Error(
        `${what} did not finish within ${Math.round(ms / 1000)} s${progress ? ` (${progress()})` : ''}`,
      );
    }
    await sleep(everyMs);
  }
  return now();
}

/** Splits messages into runs of at most CHUNK_BYTES of values (at least one message each). */
function chunksByBytes<T extends { value: Buffer | null }>(messages: readonly T[]): T[][] {
  const chunks: T[][] = [];
  let chunk: T[] = [];
  let bytes = 0;
  for (const m of messages) {
    const size = m.value?.length ?? 0;
    if (chunk.length > 0 && bytes + size > CHUNK_BYTES) {
      chunks.push(chunk);
      chunk = [];
      bytes = 0;
    }
    chunk.push(m);
    bytes += size;
  }
  if (chunk.length > 0) chunks.push(chunk);
  return chunks;
}

// ─── Kafka helpers ──────────────────────────────────────────────────────────────────────────────

interface Bench {
  kafka: Kafka;
  brokers: string[];
  broker: LocalBroker | undefined;
  /** Receives a traced phase's spans over OTLP (a local Jaeger v2), when one could start. */
  jaeger: LocalJaeger | undefined;
  /** Receives the other traced phase's spans and discards them (a process of its own). */
  otlpSink: Awaited<ReturnType<typeof startDiscardingReceiver>>;
  runId: string;
  options: BenchOptions;
  rss: RssSampler;
  /** Everything this run created, deleted at the end on a broker we did not start. */
  topics: string[];
  groupSeq: number;
}

function freshGroup(bench: Bench, what: string): string {
  return `bench-${bench.runId}-${what}-${++bench.groupSeq}`;
}

async function createTopics(bench: Bench, ...topics: string[]): Promise<void> {
  await ensureTopics(
    bench.kafka,
    topics.map((topic) => ({ topic, numPartitions: PARTITIONS })),
  );
  bench.topics.push(...topics);
}

async function topicSize(kafka: Kafka, topic: string): Promise<number> {
  const admin = kafka.admin();
  await admin.connect();
  try {
    const offsets = await admin.fetchTopicOffsets(topic);
    return offsets.reduce((n, p) => n + Number(p.high) - Number(p.low), 0);
  } finally {
    await admin.disconnect();
  }
}

function newProducer(kafka: Kafka, idempotent = false): Producer {
  return kafka.producer({
    idempotent,
    ...(idempotent ? { maxInFlightRequests: 1 } : {}),
    allowAutoTopicCreation: false,
    createPartitioner: Partitioners.DefaultPartitioner,
  });
}

/** A consumer in a fresh group, connected and subscribed to `topic` from its beginning. */
async function subscribedConsumer(
  bench: Bench,
  topic: string,
  what: string,
  maxWaitTimeInMs = 100,
): Promise<Consumer> {
  const consumer = bench.kafka.consumer({
    groupId: freshGroup(bench, what),
    maxWaitTimeInMs,
    allowAutoTopicCreation: false,
  });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  return consumer;
}

/**
 * Reads `topic` from the beginning with a fresh group and calls `onMessage` for each record,
 * until `stop()` is called. Resolves once the consumer has joined its group.
 */
async function startReader(
  bench: Bench,
  topic: string,
  onMessage: (message: KafkaMessage, readAt: number) => void,
): Promise<{ stop(): Promise<void> }> {
  const consumer = await subscribedConsumer(bench, topic, 'reader', 50);
  await consumer.run({
    autoCommit: false,
    eachBatch: async ({ batch }) => {
      for (const message of batch.messages) onMessage(message, Date.now());
    },
  });
  return { stop: () => consumer.disconnect() };
}

// ─── requests ───────────────────────────────────────────────────────────────────────────────────

function examplePool(spec: BenchModelSpec, seed: number): Float32Array[] {
  const random = mulberry32(seed);
  const size = exampleSize(spec);
  return Array.from({ length: POOL_SIZE }, () => Float32Array.from({ length: size }, random));
}

function encodeRequest(
  codec: AvroCodec,
  spec: BenchModelSpec,
  pool: Float32Array[],
  id: string,
  i: number,
  requestedAt: number,
): Buffer {
  return codec.encodeRequest(
    {
      id,
      model: null,
      modelVersion: null,
      requestedAt,
      inputs: [{ name: 'x', shape: spec.inputShape, data: pool[i % pool.length]! }],
    },
    'bytes',
  );
}

/** Produces `count` requests as fast as the broker takes them, round-robin over the partitions. */
async function preProduce(
  bench: Bench,
  spec: BenchModelSpec,
  topic: string,
  count: number,
): Promise<{ seconds: number; bytesPerRequest: number }> {
  const codec = new AvroCodec();
  const pool = examplePool(spec, 7);
  const producer = newProducer(bench.kafka);
  await producer.connect();
  const started = now();
  const bytesPerRequest = encodeRequest(codec, spec, pool, 'x', 0, 0).length;
  const perSend = Math.max(1, Math.floor(CHUNK_BYTES / bytesPerRequest));
  const inFlight = new Set<Promise<unknown>>();
  try {
    for (let first = 0; first < count; first += perSend) {
      const requestedAt = Date.now();
      const messages = [];
      for (let i = first; i < Math.min(count, first + perSend); i++) {
        messages.push({
          key: `r${i}`,
          value: encodeRequest(codec, spec, pool, `${spec.name}-${i}`, i, requestedAt),
          partition: i % PARTITIONS,
        });
      }
      const send = producer.send({ topic, acks: -1, messages });
      inFlight.add(send);
      void send.finally(() => inFlight.delete(send)).catch(() => undefined);
      if (inFlight.size >= 8) await Promise.race(inFlight);
    }
    await Promise.all(inFlight);
  } finally {
    await producer.disconnect();
  }
  const stored = await topicSize(bench.kafka, topic);
  if (stored !== count)
    throw new Error(`pre-produced ${count} requests but ${topic} holds ${stored}`);
  return { seconds: (now() - started) / 1000, bytesPerRequest };
}

// ─── phases ─────────────────────────────────────────────────────────────────────────────────────

interface Throughput {
  records: number;
  seconds: number;
  rps: number;
  /** `receiver`: the OTLP receiver of a traced phase (its own process). */
  cpu_cores: { bench: number; broker: number | null; receiver?: number | null };
}

function phaseTimeoutMs(records: number): number {
  // Generous: a phase far slower than this is broken, not slow (the slowest seen is ~1 k/s).
  return 120_000 + records * 2;
}

/** 1. kafkajs consume → produce of the same bytes: no decode, no model. */
async function ioCeiling(
  bench: Bench,
  from: string,
  to: string,
  expected: number,
): Promise<Throughput> {
  // The same producer settings as the worker's sink (idempotent, acks -1, one request in flight):
  // the ceiling is for the same delivery guarantee, not a looser one.
  const producer = newProducer(bench.kafka, true);
  await producer.connect();
  const consumer = await subscribedConsumer(bench, from, 'io');
  let first = 0;
  let last = 0;
  let acked = 0;
  const done = deferred();
  const cpu = cpuMeter(bench.broker?.pid);
  try {
    await consumer.run({
      autoCommitInterval: 500, // as the worker's commit.intervalMs
      partitionsConsumedConcurrently: PARTITIONS,
      eachBatch: async ({ batch }) => {
        if (first === 0) first = now();
        for (const chunk of chunksByBytes(batch.messages)) {
          await producer.sendBatch({
            acks: -1,
            topicMessages: [
              {
                topic: to,
                messages: chunk.map((m) => ({
                  key: m.key,
                  value: m.value,
                  headers: m.headers,
                  partition: batch.partition,
                })),
              },
            ],
          });
          acked += chunk.length;
        }
        if (acked >= expected && last === 0) {
          last = now();
          done.resolve();
        }
      },
    });
    await within(phaseTimeoutMs(expected), 'the I/O ceiling phase', done.promise);
  } finally {
    await consumer.disconnect();
    await producer.disconnect();
  }
  const cores = cpu();
  const copied = await topicSize(bench.kafka, to);
  if (copied !== expected)
    throw new Error(`I/O ceiling copied ${copied} records, expected ${expected}`);
  const seconds = (last - first) / 1000;
  return { records: expected, seconds, rps: expected / seconds, cpu_cores: cores };
}

interface ComputeCeiling {
  rps: number;
  best_batch: number;
  /** samples/s and milliseconds per predict call, by batch size. */
  by_batch: Record<string, { rps: number; ms_per_batch: number }>;
  seconds: number;
}

/** 2. The runner's predict (tensor in, predict, data() out) on prepared batches, in this thread. */
async function computeCeiling(
  runner: ModelRunner,
  spec: BenchModelSpec,
  quick: boolean,
): Promise<ComputeCeiling> {
  const pool = examplePool(spec, 11);
  const width = exampleSize(spec);
  const probeMs = quick ? 150 : 400;
  const confirmMs = quick ? 500 : 2500;
  const batchOf = (size: number) => {
    const data = new Float32Array(size * width);
    for (let i = 0; i < size; i++) data.set(pool[i % pool.length]!, i * width);
    return { size, inputs: { x: data } };
  };
  const measure = async (size: number, ms: number) => {
    const batch = batchOf(size);
    for (let i = 0; i < 3; i++) await runner.predict(batch); // kernels and buffers for this size
    let calls = 0;
    const started = now();
    while (now() - started < ms || calls < 3) {
      await runner.predict(batch);
      calls++;
    }
    const elapsed = now() - started;
    return { rps: (calls * size) / (elapsed / 1000), ms_per_batch: elapsed / calls };
  };
  // JIT and the wasm heap settle first; then two passes over the sizes, keeping each size's
  // best (a ceiling is the best sustained rate seen: a GC pause or a neighbour's burst only
  // ever lowers a probe), then the best size once more, for longer.
  await measure(1, probeMs);
  await measure(256, probeMs);
  const by_batch: ComputeCeiling['by_batch'] = {};
  let best = 1;
  for (let pass = 0; pass < 2; pass++) {
    for (let size = 1; size <= 256; size *= 2) {
      const m = await measure(size, probeMs / 2);
      const seen = by_batch[size];
      if (seen === undefined || m.rps > seen.rps)
        by_batch[size] = { rps: round(m.rps), ms_per_batch: round(m.ms_per_batch, 3) };
      if (by_batch[size]!.rps > by_batch[best]!.rps) best = size;
    }
  }
  const confirmed = await measure(best, confirmMs);
  return {
    rps: Math.max(confirmed.rps, by_batch[best]!.rps),
    best_batch: best,
    by_batch,
    seconds: (probeMs * 11 + confirmMs) / 1000,
  };
}

interface NaiveResult extends Throughput {
  /** Records answered before the time budget ran out (the rate is what matters). */
  of: number;
}

/** 3. The per-request pattern: eachMessage → decode → predict(1) → encode → awaited send. */
async function naiveWorker(
  bench: Bench,
  runner: ModelRunner,
  config: StreamscoreConfig,
  from: string,
  to: string,
  expected: number,
): Promise<NaiveResult> {
  const codec = new AvroCodec({ resultFloatEncoding: config.output.floatEncoding });
  const { info } = runner;
  const producer = newProducer(bench.kafka);
  await producer.connect();
  const consumer = await subscribedConsumer(bench, from, 'naive');
  const budgetMs = bench.options.naiveSeconds * 1000;
  let first = 0;
  let last = 0;
  let answered = 0;
  let stopped = false;
  const done = deferred();
  const cpu = cpuMeter(bench.broker?.pid);
  try {
    await consumer.run({
      eachMessage: async ({ message }) => {
        if (stopped) return;
        if (first === 0) first = now();
        const receivedAt = Date.now();
        const request = codec.decodeRequest(message.value!);
        const outputs = await runner.predict({ size: 1, inputs: { x: request.inputs[0]!.data } });
        const inferredAt = Date.now();
        const y = outputs['y']!;
        let top = 0;
        for (let i = 1; i < y.length; i++) if (y[i]! > y[top]!) top = i;
        const labels = info.labels;
        const result: InferenceResult = {
          id: request.id,
          model: info.name,
          modelVersion: info.version,
          outputs: [{ name: 'y', shape: [y.length], data: y }],
          label: labels ? (labels[top] ?? null) : null,
          labelIndex: labels ? top : null,
          score: labels ? y[top]! : null,
          requestedAt: request.requestedAt ?? Number(message.timestamp),
          receivedAt,
          inferredAt,
          sentAt: Date.now(),
        };
        await producer.send({
          topic: to,
          acks: -1,
          messages: [{ key: message.key, value: codec.encodeResult(result) }],
        });
        answered++;
        last = now();
        if (answered >= expected || last - first >= budgetMs) {
          stopped = true;
          done.resolve();
        }
      },
    });
    await within(budgetMs + 120_000, 'the naive worker phase', done.promise);
  } finally {
    await consumer.disconnect();
    await producer.disconnect();
  }
  const cores = cpu();
  const seconds = (last - first) / 1000;
  return { records: answered, of: expected, seconds, rps: answered / seconds, cpu_cores: cores };
}

/** The configuration of every streamscore phase: defaults, plus where to read and write. */
function streamscoreConfig(
  bench: Bench,
  name: BenchModelName,
  topics: { requests: string; results: string; deadLetter: string },
  mode: DeliveryMode = 'at-least-once',
  otlpEndpoint: string | null = null,
  batchLimit: number | null = null,
): StreamscoreConfig {
  return loadConfig({
    env: {},
    overrides: {
      kafka: { brokers: bench.brokers, groupId: freshGroup(bench, 'streamscore') },
      topics: {
        requests: [topics.requests],
        results: topics.results,
        deadLetter: topics.deadLetter,
      },
      model: { repository: BENCH_REPOSITORY, name, version: BENCH_VERSION },
      delivery: { mode },
      // Every phase after the first keeps the batch size the first one's autotune chose (below).
      ...(batchLimit === null ? {} : { batching: { autotune: false, maxBatchSize: batchLimit } }),
      telemetry: { otlpEndpoint, serviceName: `streamscore-bench-${name}` },
      // The default: /metrics served (Prometheus reader on); port 0 only to avoid collisions.
      http: { port: 0 },
      log: { level: 'silent' },
    },
  });
}

type DeliveryMode = StreamscoreConfig['delivery']['mode'];

interface StreamscoreThroughput extends Throughput {
  batches: number;
  mean_batch: number;
  dead_lettered: number;
  backend: string;
  /** Model calls that can run at once (replicas in worker threads). */
  replicas: number;
  /** The largest batch the worker forms, autotuned or configured, from its start-up log. */
  batch_size_limit: number | null;
  /**
   * Share of 2 ms polls during the phase in which the worker held no unanswered request: it had
   * answered everything it had read and was waiting for the next fetch.
   */
  empty_fraction: number;
  drained: boolean;
  /** Process RSS after a full GC, before the worker started: what the benchmark itself holds. */
  rss_at_start_mb: number;
  peak_rss_mb: number;
  /** Traced phases: spans dropped (export queue full), from the worker's /metrics. */
  spans_dropped?: number;
  /**
   * CPU time of this process's main thread (the worker's event loop) per request, from the
   * worker's start to its last answer, in µs; null where Linux's per-thread statistics are not
   * readable. The worker's throughput is bounded by this thread, and its CPU time moves less
   * with a busy machine than the wall clock does.
   */
  main_thread_us_per_request: number | null;
  /** The main thread's GC pauses over the same span (start to last answer). */
  gc: { pause_ms: number; major_pause_ms: number; major: number };
  /** V8 heap in use after the full GC before the worker started: what earlier phases left. */
  heap_used_at_start_mb: number;
}

let throughputRuns = 0;

/** Where a traced phase sends its spans: its OTLP endpoint and the receiver's process. */
interface TraceReceiver {
  kind: 'sink' | 'jaeger';
  endpoint: string;
  pid: number;
}

/** Spans the worker dropped, from its /metrics (otel_sdk_processor_span_processed_total). */
async function droppedSpans(service: Service): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${service.http!.port}/metrics`)).text();
  return metricSum(text, 'otel_sdk_processor_span_processed_total', 'error_type="queue_full"');
}

/**
 * 4. The real worker on the pre-produced topic. It loads and warms up the model and joins its
 * group before it reads anything, so the rate runs from the earliest `receivedAt` among the
 * results (when the worker read its first request) to the moment the worker's own counter of
 * acknowledged results reaches N (polled every 2 ms).
 */
async function streamscoreThroughput(
  bench: Bench,
  name: BenchModelName,
  requests: string,
  expected: number,
  mode: DeliveryMode = 'at-least-once',
  traces: TraceReceiver | null = null,
  batchLimit: number | null = null,
): Promise<{ result: StreamscoreThroughput; config: StreamscoreConfig }> {
  const suffix = traces ? `ss-traced-${traces.kind}` : mode === 'exactly-once' ? 'ss-eos' : 'ss';
  // Fresh topics every run: a second round reading the first round's results back would take
  // their (earlier) receivedAt as its start.
  const run = ++throughputRuns;
  const results = `${requests}.${suffix}-${run}-results`;
  const deadLetter = `${requests}.${suffix}-${run}-dead-letter`;
  await createTopics(bench, results, deadLetter);
  const config = streamscoreConfig(
    bench,
    name,
    { requests, results, deadLetter },
    mode,
    traces?.endpoint ?? null,
    batchLimit,
  );
  collectGarbage();
  const heapAtStart = process.memoryUsage().heapUsed / 2 ** 20;
  const rssAtStart = bench.rss.sample() / 2 ** 20;
  const rssWindow = bench.rss.window();
  const startup = startupLog();
  let service: Service | undefined;
  let end: number;
  let cores: Throughput['cpu_cores'];
  let drained: boolean;
  let spansDropped: number | undefined;
  let mainThreadAtStart: number | null = null;
  let mainThreadSeconds: number | null = null;
  let gc: StreamscoreThroughput['gc'] | undefined;
  // Samples of the poll below, once the worker has read something: how often it held no
  // unanswered request at all, i.e. waited for Kafka to hand it more.
  let samples = 0;
  let emptySamples = 0;
  try {
    service = await startService(config, { log: startup.log });
    const cpu = cpuMeter(bench.broker?.pid, traces?.pid);
    mainThreadAtStart = threadCpuSeconds();
    const gcWindow = gcMeter();
    const { worker } = service;
    const snapshot = worker.metrics.snapshot;
    end = await until(
      phaseTimeoutMs(expected),
      'the streamscore phase',
      () => {
        const answered = snapshot.produced + snapshot.deadLettered;
        if (snapshot.received > 0 && answered < expected) {
          samples++;
          if (worker.inFlight === 0) emptySamples++;
        }
        return answered >= expected;
      },
      2,
      () => `${snapshot.produced} of ${expected} answered`,
    );
    cores = cpu();
    gc = gcWindow();
    const mainThreadAtEnd = threadCpuSeconds();
    mainThreadSeconds =
      mainThreadAtStart === null || mainThreadAtEnd === null
        ? null
        : mainThreadAtEnd - mainThreadAtStart;
    if (traces) {
      // The tracing thread reports its processor's counts every second.
      await sleep(1500);
      spansDropped = await droppedSpans(service);
    }
    drained = (await service.stop()).drained;
  } finally {
    await service?.stop();
  }
  const peak = rssWindow();
  const snapshot = service.worker.metrics.snapshot;

  // The earliest receivedAt: results of one partition are produced in the order they were read,
  // so it is among the first records of some result partition; reading all of them also checks
  // that every request was answered exactly once.
  const codec = new AvroCodec();
  let firstReceived = Infinity;
  const ids = new Set<string>();
  const all = deferred();
  const reader = await startReader(bench, results, (message) => {
    const result = codec.decodeResult(message.value!);
    firstReceived = Math.min(firstReceived, result.receivedAt);
    ids.add(result.id);
    if (ids.size >= snapshot.produced) all.resolve();
  });
  try {
    await within(120_000, 'reading the streamscore results back', all.promise);
  } finally {
    await reader.stop();
  }
  if (snapshot.deadLettered > 0 || ids.size !== expected) {
    throw new Error(
      `streamscore answered ${ids.size} distinct requests of ${expected} (${snapshot.deadLettered} dead-lettered: ${JSON.stringify(snapshot.deadLetteredByCode)})`,
    );
  }
  const seconds = (end - firstReceived) / 1000;
  return {
    config,
    result: {
      records: expected,
      seconds,
      rps: expected / seconds,
      cpu_cores: cores,
      batches: snapshot.batches,
      mean_batch: round(snapshot.produced / snapshot.batches, 1),
      dead_lettered: snapshot.deadLettered,
      backend: service.model.info.backend,
      replicas: service.model.concurrency ?? 1,
      batch_size_limit: startup.batchSize(),
      empty_fraction: samples > 0 ? round(emptySamples / samples, 3) : 0,
      drained,
      rss_at_start_mb: round(rssAtStart),
      peak_rss_mb: round(peak),
      ...(spansDropped === undefined ? {} : { spans_dropped: spansDropped }),
      main_thread_us_per_request:
        mainThreadSeconds === null ? null : round((mainThreadSeconds * 1e6) / expected, 1),
      gc: gc!,
      heap_used_at_start_mb: round(heapAtStart),
    },
  };
}

/**
 * A logger for startService that prints nothing and keeps only the record that carries the
 * batch size the worker chose at start (autotuned or configured: a numeric `batchSize` field).
 */
function startupLog(): { log: Logger; batchSize(): number | null } {
  let batchSize: number | null = null;
  const destination = {
    write(line: string) {
      if (!line.includes('"batchSize"')) return;
      try {
        const record = JSON.parse(line) as { batchSize?: unknown };
        if (typeof record.batchSize === 'number') batchSize = record.batchSize;
      } catch {
        // not one line of JSON: not the record we keep
      }
    },
  };
  return { log: createLogger('info', destination), batchSize: () => batchSize };
}

/**
 * A paced producer: `rate` requests/s for `seconds`, sent every PACED_TICK_MS with requestedAt
 * set at send time. Sends are not awaited one by one, so a slow acknowledgement does not slow
 * the pace; but at most PACED_MAX_PENDING sends (of ≤ CHUNK_BYTES) are unacknowledged at once,
 * which bounds what this producer holds in memory (it shares the process with the worker whose
 * RSS is measured). Falling behind is caught up later, up to that window.
 */
async function offer(
  producer: Producer,
  spec: BenchModelSpec,
  topic: string,
  prefix: string,
  rate: number,
  seconds: number,
): Promise<{ sent: number; seconds: number; rps: number }> {
  const codec = new AvroCodec();
  const pool = examplePool(spec, 13);
  const total = Math.max(1, Math.round(rate * seconds));
  // Requests are all about this size: it decides how many fit in the window of pending sends.
  const perSend = Math.max(
    1,
    Math.floor(CHUNK_BYTES / encodeRequest(codec, spec, pool, `${prefix}-${total}`, 0, 0).length),
  );
  const pending = new Set<Promise<unknown>>();
  let failure: unknown;
  let sent = 0;
  const started = now();
  // Stops at the deadline even when behind (the achieved rate then says so): a producer that
  // cannot keep up must not turn "N seconds of load" into a longer, different test.
  while (sent < total && now() - started < seconds * 1000) {
    if (failure !== undefined) break;
    const elapsed = now() - started;
    const room = (PACED_MAX_PENDING - pending.size) * perSend;
    const due = Math.min(total, Math.floor((rate * elapsed) / 1000) + 1, sent + room) - sent;
    if (due > 0) {
      const requestedAt = Date.now();
      const messages = [];
      for (let i = sent; i < sent + due; i++) {
        messages.push({
          key: `${prefix}-${i}`,
          value: encodeRequest(codec, spec, pool, `${prefix}-${i}`, i, requestedAt),
          partition: i % PARTITIONS,
        });
      }
      sent += due;
      // A catch-up after a stall can be large: keep each request under the broker's limit.
      for (const chunk of chunksByBytes(messages)) {
        const send = producer.send({ topic, acks: -1, messages: chunk }).catch((err: unknown) => {
          failure ??= err;
        });
        pending.add(send);
        void send.finally(() => pending.delete(send));
      }
    }
    await sleep(PACED_TICK_MS);
  }
  await Promise.all(pending);
  if (failure !== undefined) throw failure;
  const elapsed = (now() - started) / 1000;
  return { sent, seconds: elapsed, rps: sent / elapsed };
}

interface LatencyAtLoad {
  load_pct: number;
  offered_rps: number;
  achieved_rps: number;
  requests: number;
  answered: number;
  p50_ms: number;
  p95_ms: number;
  p99_ms: number;
  max_ms: number;
  /** Medians of the parts of a request's life, from the result's timestamps. */
  breakdown_p50_ms: {
    /** requestedAt → receivedAt: our producer, the broker, the worker's fetch. */
    to_worker: number;
    /** receivedAt → inferredAt: waiting for the batch to fill, queueing, inference. */
    batch_and_inference: number;
    /** inferredAt → read: encode, produce and acknowledge, our reader's fetch. */
    to_reader: number;
  };
  /** CPU cores used during the load and its answers: the worker process, this process, the broker. */
  cpu_cores: { worker: number | null; bench: number; broker: number | null };
}

interface OverloadResult {
  offered_rps: number;
  achieved_offer_rps: number;
  seconds: number;
  requests: number;
  /**
   * The worker process's peak RSS (VmHWM) from the start of the overload to its exit: the peak
   * is reset (/proc/<pid>/clear_refs) when the overload starts, so the latency loads before it
   * are not counted; where that reset is refused, the peak since the worker started.
   */
  peak_rss_mb: number;
  peak_rss_reset: boolean;
  /** The worker process's RSS (VmRSS), every second, from the start of the overload to the drain. */
  rss_mb_per_second: number[];
  /** This benchmark process's own peak RSS during the overload (producer and reader). */
  bench_process_peak_rss_mb: number;
  cpu_cores: { worker: number | null; bench: number; broker: number | null };
  drain_seconds: number;
  drained: boolean;
}

/** What `streamscore run` reported when it was stopped with SIGTERM. */
interface WorkerExit {
  exit_code: number | null;
  signal: string | null;
  /** Seconds from SIGTERM to exit. */
  stop_seconds: number;
  /** The `worker stopped …` log record: drained, unanswered and the worker's counters. */
  stopped: Record<string, unknown> | null;
}

interface WorkerProcessReport extends WorkerExit {
  command: string;
  env: Record<string, string>;
  pid: number;
  /** Seconds from spawn to the `worker started` log line (load, warm-up, autotune, join). */
  startup_seconds: number;
  /** The batch size from the `batch size autotuned` log line (or the configured size). */
  batch_size: number | null;
  /** VmHWM of the worker process over the latency loads (and the overload), read from /proc. */
  peak_rss_mb: number;
  /** Log records at warn or error, if any. */
  warnings: Record<string, unknown>[];
}

/** Reads VmRSS and VmHWM (MiB) of a process from /proc; null when it is gone or not Linux. */
function procMemory(pid: number): { rss: number; hwm: number } | null {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const kb = (field: string) =>
      Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status)?.[1]);
    const rss = kb('VmRSS');
    const hwm = kb('VmHWM');
    return Number.isFinite(rss) && Number.isFinite(hwm)
      ? { rss: rss / 1024, hwm: hwm / 1024 }
      : null;
  } catch {
    return null;
  }
}

/** CPU seconds (user + system) of a process, from /proc/<pid>/stat; null when unavailable. */
function procCpuSeconds(pid: number | undefined): number | null {
  if (pid === undefined) return null;
  try {
    // Fields 14 and 15 (utime, stime) follow the command name, which may contain spaces.
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const CLK_TCK = 100; // Linux's USER_HZ on every mainstream architecture
    return (Number(fields[11]) + Number(fields[12])) / CLK_TCK;
  } catch {
    return null;
  }
}

/** CPU cores used by the worker process, this process and the broker over a window. */
function cpuCores(
  workerPid: number,
  brokerPid: number | undefined,
): () => { worker: number | null; bench: number; broker: number | null } {
  const t0 = now();
  const w0 = procCpuSeconds(workerPid);
  const b0 = procCpuSeconds(brokerPid);
  const c0 = process.cpuUsage();
  return () => {
    const wall = (now() - t0) / 1000;
    const w1 = procCpuSeconds(workerPid);
    const b1 = procCpuSeconds(brokerPid);
    const c = process.cpuUsage(c0);
    return {
      worker: w0 === null || w1 === null ? null : round((w1 - w0) / wall, 2),
      bench: round((c.user + c.system) / 1e6 / wall, 2),
      broker: b0 === null || b1 === null ? null : round((b1 - b0) / wall, 2),
    };
  };
}

/** `streamscore run` in its own process, as an operator starts it. */
interface WorkerProcess {
  pid: number;
  logs: Record<string, unknown>[];
  startupSeconds: number;
  /** Peak RSS (VmHWM, MiB) seen so far, including before any reset. */
  peakMb(): number;
  /** Resets the kernel's peak RSS of the process; false when refused. */
  resetPeak(): boolean;
  /** SIGTERM, then waits for the exit (SIGKILL after `ms`). */
  stop(ms: number): Promise<WorkerExit>;
  /** SIGKILL, if still running (on failure paths). */
  kill(): void;
  /** Sends a signal (SIGSTOP / SIGCONT: the interleaved tracing phase), if still running. */
  signal(name: NodeJS.Signals): void;
  /** The port of its HTTP server (/metrics), from its `http server listening` log line. */
  httpPort(): number;
}

const WORKER_ARGS = ['--import', 'tsx', path.join('src', 'cli', 'main.ts'), 'run'];

/** Spawns the worker and resolves at its `worker started` log line. */
async function startWorkerProcess(env: Record<string, string>): Promise<WorkerProcess> {
  // The worker sees only the STREAMSCORE_* variables given here, none of this shell's.
  const inherited = Object.fromEntries(
    Object.entries(process.env).filter(([k]) => !k.startsWith('STREAMSCORE_')),
  );
  const spawnedAt = now();
  const child: ChildProcess = spawn(process.execPath, WORKER_ARGS, {
    cwd: ROOT,
    // Any free port for /healthz, /readyz and /metrics: several workers may run at once.
    env: { ...inherited, STREAMSCORE_HTTP_PORT: '0', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const pid = child.pid;
  if (pid === undefined) throw new Error('could not start `streamscore run`');
  const logs: Record<string, unknown>[] = [];
  let stderr = '';
  let peak = 0;
  const exited = new Promise<{ code: number | null; signal: string | null }>((resolve) =>
    child.once('exit', (code, signal) => resolve({ code, signal })),
  );
  let running = true;
  void exited.then(() => (running = false));
  const sample = () => {
    const m = procMemory(pid);
    if (m) peak = Math.max(peak, m.hwm);
    return m;
  };
  const timer = setInterval(sample, 250);
  timer.unref();
  void exited.then(() => clearInterval(timer));
  child.stderr!.on('data', (chunk: Buffer) => {
    stderr = (stderr + chunk.toString()).slice(-4000);
  });
  const started = deferred();
  let buffered = '';
  child.stdout!.on('data', (chunk: Buffer) => {
    buffered += chunk.toString();
    const lines = buffered.split('\n');
    buffered = lines.pop()!;
    for (const line of lines) {
      if (!line.trim()) continue;
      try {
        const entry = JSON.parse(line) as Record<string, unknown>;
        logs.push(entry);
        if (entry['msg'] === 'worker started') started.resolve();
      } catch {
        logs.push({ msg: line });
      }
    }
  });
  void exited.then(({ code, signal }) =>
    started.reject(
      new Error(`streamscore run exited (${code ?? signal}) before it started: ${stderr}`),
    ),
  );
  try {
    await within(180_000, 'starting `streamscore run`', started.promise);
  } catch (err) {
    if (running) child.kill('SIGKILL');
    throw err;
  }
  const startupSeconds = (now() - spawnedAt) / 1000;
  return {
    pid,
    logs,
    startupSeconds,
    peakMb: () => {
      sample();
      return peak;
    },
    resetPeak: () => {
      sample();
      try {
        // "5" resets the peak RSS (VmHWM) to the current RSS (Linux ≥ 4.0, proc(5)).
        writeFileSync(`/proc/${pid}/clear_refs`, '5');
        return true;
      } catch {
        return false;
      }
    },
    stop: async (ms: number) => {
      sample();
      const t0 = now();
      if (running) child.kill('SIGTERM');
      // Until the exit, keep reading the peak: the drain may still allocate.
      const poller = setInterval(sample, 20);
      let exit: { code: number | null; signal: string | null };
      try {
        exit = await within(ms, 'stopping `streamscore run`', exited);
      } catch (err) {
        child.kill('SIGKILL');
        throw err;
      } finally {
        clearInterval(poller);
      }
      return {
        exit_code: exit.code,
        signal: exit.signal,
        stop_seconds: round((now() - t0) / 1000, 2),
        stopped:
          logs.find((l) => typeof l['msg'] === 'string' && l['msg'].startsWith('worker stopped')) ??
          null,
      };
    },
    kill: () => {
      if (!running) return;
      child.kill('SIGCONT');
      child.kill('SIGKILL');
    },
    signal: (name) => {
      if (running) child.kill(name);
    },
    httpPort: () => {
      const line = logs.find((l) => l['msg'] === 'http server listening');
      if (typeof line?.['port'] !== 'number') throw new Error('the worker logged no HTTP port');
      return line['port'];
    },
  };
}

/**
 * The environment that configures `streamscore run` as streamscoreConfig() configures the
 * in-process worker (defaults; brokers, a fresh group, topics and model), and the configuration
 * the worker will derive from it.
 */
function workerEnv(
  bench: Bench,
  name: BenchModelName,
  topics: { requests: string; results: string; deadLetter: string },
): { env: Record<string, string>; config: StreamscoreConfig } {
  const env = {
    STREAMSCORE_KAFKA_BROKERS: bench.brokers.join(','),
    STREAMSCORE_KAFKA_GROUP_ID: freshGroup(bench, 'streamscore'),
    STREAMSCORE_TOPICS_REQUESTS: topics.requests,
    STREAMSCORE_TOPICS_RESULTS: topics.results,
    STREAMSCORE_TOPICS_DEAD_LETTER: topics.deadLetter,
    STREAMSCORE_MODEL_REPOSITORY: path.relative(ROOT, BENCH_REPOSITORY),
    STREAMSCORE_MODEL_NAME: name,
    STREAMSCORE_MODEL_VERSION: String(BENCH_VERSION),
    STREAMSCORE_LOG_LEVEL: 'info',
  };
  // Resolved from ROOT, the worker's working directory, as the worker will.
  const config = loadConfig({ env, overrides: { model: { repository: BENCH_REPOSITORY } } });
  return { env, config };
}

/** Each worker's time the interleaved tracing phase measures (seconds; a tenth with --quick). */
const TURNS_SECONDS_PER_WORKER = 15;
/** How long one worker runs before the other takes its turn. */
const TURN_MS = 500;

/** One side of the interleaved tracing phase: its measured turns added up. */
interface TurnsSide {
  records: number;
  seconds: number;
  rps: number;
  /** CPU of the worker's main thread (its event loop) per request, µs. */
  main_thread_us_per_request: number | null;
  /** CPU of the whole worker process (every thread: tracing, GC, libuv) per request, µs. */
  process_us_per_request: number | null;
  /**
   * CPU of the broker during this side's turns per request, µs: what its reads, its results (with
   * their headers) and its commits cost the broker, which shares this machine's cores.
   */
  broker_us_per_request: number | null;
}

/** What one side ran: requests answered, seconds, and CPU seconds (null where unreadable). */
interface SideTotals {
  records: number;
  seconds: number;
  main: number | null;
  cpu: number | null;
  broker: number | null;
}

/** A side's rate and CPU per request from its totals. */
function turnsSide(m: SideTotals): TurnsSide {
  const us = (s: number | null) => (s === null ? null : round((s * 1e6) / m.records, 1));
  return {
    records: m.records,
    seconds: round(m.seconds, 2),
    rps: round(m.records / m.seconds),
    main_thread_us_per_request: us(m.main),
    process_us_per_request: us(m.cpu),
    broker_us_per_request: us(m.broker),
  };
}

/** The tracing cost, measured by an untraced and a traced worker taking turns on the machine. */
interface TracingTurns {
  /** Requests in the phase's own topic, read by both workers. */
  requests: number;
  turn_ms: number;
  /** Measured turns of each worker. */
  turns: number;
  untraced: TurnsSide;
  traced: TurnsSide;
  /** 1 − traced ÷ untraced rate over all measured turns, in percent. */
  tracing_cost_pct: number;
  /**
   * The same over each fifth of each session's measured turns, in order (the untraced-first
   * session's five, then the traced-first one's): how steady it was.
   */
  tracing_cost_pct_by_fifth: number[];
  /** Each session on its own: which worker started first, and the cost over its turns. */
  sessions: { traced_started_first: boolean; tracing_cost_pct: number }[];
  /** CPU of the OTLP receiver (a discarding one) per traced request, µs. */
  receiver_us_per_request: number | null;
  /** Spans the traced worker dropped (its export queue full), from its /metrics. */
  spans_dropped: number;
  /** Mean time to read each worker's /metrics at the end of a turn, ms (untraced, traced). */
  scrape_ms: [number, number];
}

let tracingTurnsRuns = 0;

function sayTurns(turns: TracingTurns): void {
  say(
    `      tracing costs ${turns.tracing_cost_pct} %: ${fmtRate(turns.traced.rps)}/s traced vs ${fmtRate(turns.untraced.rps)}/s untraced over ${turns.turns} turns of ${TURN_MS} ms each (${fmtSessions(turns)}; by fifths: ${turns.tracing_cost_pct_by_fifth.join(', ')} %); main thread ${turns.traced.main_thread_us_per_request ?? '?'} vs ${turns.untraced.main_thread_us_per_request ?? '?'} µs per request, process ${turns.traced.process_us_per_request ?? '?'} vs ${turns.untraced.process_us_per_request ?? '?'}, broker ${turns.traced.broker_us_per_request ?? '?'} vs ${turns.untraced.broker_us_per_request ?? '?'}, receiver ${turns.receiver_us_per_request ?? '?'}; ${turns.spans_dropped} spans dropped`,
  );
}

/** "x % untraced first, y % traced first". */
function fmtSessions(turns: TracingTurns): string {
  return turns.sessions
    .map((x) => `${x.tracing_cost_pct} % ${x.traced_started_first ? 'traced' : 'untraced'} first`)
    .join(', ');
}

/** One reading of a worker, taken at the end of its turn, while it runs. */
interface TurnReading {
  /** The turn began (SIGCONT), the reading was taken, the turn ended (SIGSTOP): ms. */
  began: number;
  read: number;
  ended: number;
  /** Results and dead letters acknowledged so far (its /metrics). */
  answered: number;
  mainThreadSeconds: number | null;
  processSeconds: number | null;
  /** The broker's CPU seconds as the turn began, at the reading, and as it ended. */
  broker: { began: number | null; read: number | null; ended: number | null };
}

/** CPU seconds of one thread of a process (/proc/<pid>/task/<tid>/schedstat); null elsewhere. */
function procThreadCpuSeconds(pid: number, tid: number): number | null {
  try {
    return Number(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'utf8').split(' ')[0]) / 1e9;
  } catch {
    return null;
  }
}

/** Sums the samples of one Prometheus metric (every label set) in an exposition text. */
function metricSum(text: string, name: string, labelFilter = ''): number {
  let sum = 0;
  for (const line of text.split('\n')) {
    if ((line.startsWith(`${name}{`) || line.startsWith(`${name} `)) && line.includes(labelFilter))
      sum += Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return sum;
}

/**
 * Tracing's cost, measured so that a shared machine's slow spells fall on both sides: an untraced
 * and a traced `streamscore run` (the same defaults and batch size; the traced one exports every
 * span over OTLP to the discarding receiver) read the same pre-produced topic, each in its own
 * group, and take turns of TURN_MS: one is stopped (SIGSTOP) while the other runs (SIGCONT).
 * A stopped process does no work, so each side's rate is its answered requests over its own
 * running time. In-process phases of 200,000 requests, one after the other, drifted by ±15 %
 * between rounds on this machine (a fixed CPU loop alone varies ±40 % from one 80 ms chunk to
 * the next), more than the cost being measured; turns of half a second, alternated dozens of
 * times, share the drift out. Turns are counted once each side has answered a tenth of the
 * topic (start-up, JIT) and until either has answered nine tenths (before either runs dry).
 * This runs twice, each session on a topic of its own and starting the two workers the other way
 * round (the one started second runs faster: see tracingTurnsSession); the cost is over both.
 */
async function tracingTurns(
  bench: Bench,
  spec: BenchModelSpec,
  untracedRps: number,
  batchSize: number | null,
): Promise<TracingTurns> {
  const seconds = bench.options.quick
    ? TURNS_SECONDS_PER_WORKER / 10
    : TURNS_SECONDS_PER_WORKER * bench.options.requests;
  const sessions: TracingTurns[] = [];
  for (const tracedFirst of [false, true]) {
    // --quick: a few turns per session at least.
    const each = bench.options.quick ? seconds : seconds / 2;
    sessions.push(
      await tracingTurnsSession(bench, spec, untracedRps, batchSize, tracedFirst, each),
    );
  }
  return mergeTurnsSessions(sessions);
}

/**
 * Both sides added up over the sessions that measured turns (a --quick one may have none); the
 * cost from the pooled rates.
 */
function mergeTurnsSessions(all: TracingTurns[]): TracingTurns {
  const measured = all.filter((t) => t.turns > 0);
  const sessions = measured.length > 0 ? measured : all;
  const sum = (f: (t: TracingTurns) => number): number =>
    sessions.reduce((total, t) => total + f(t), 0);
  /** A per-request figure over all sessions' requests (null if any session lacks it). */
  const perRequest = (
    records: (t: TracingTurns) => number,
    value: (t: TracingTurns) => number | null,
    digits: number,
  ): number | null => {
    if (sessions.some((t) => value(t) === null)) return null;
    return round(sum((t) => value(t)! * records(t)) / sum(records), digits);
  };
  const side = (pick: (t: TracingTurns) => TurnsSide): TurnsSide => {
    const records = sum((t) => pick(t).records);
    const seconds = sum((t) => pick(t).seconds);
    const per = (f: (s: TurnsSide) => number | null) =>
      perRequest(
        (t) => pick(t).records,
        (t) => f(pick(t)),
        1,
      );
    return {
      records,
      seconds: round(seconds, 2),
      rps: round(records / seconds),
      main_thread_us_per_request: per((s) => s.main_thread_us_per_request),
      process_us_per_request: per((s) => s.process_us_per_request),
      broker_us_per_request: per((s) => s.broker_us_per_request),
    };
  };
  const untraced = side((t) => t.untraced);
  const traced = side((t) => t.traced);
  return {
    requests: sum((t) => t.requests),
    turn_ms: TURN_MS,
    turns: sum((t) => t.turns),
    untraced,
    traced,
    tracing_cost_pct: round((1 - traced.rps / untraced.rps) * 100, 1),
    tracing_cost_pct_by_fifth: sessions.flatMap((t) => t.tracing_cost_pct_by_fifth),
    sessions: all.flatMap((t) => t.sessions),
    receiver_us_per_request: perRequest(
      (t) => t.traced.records,
      (t) => t.receiver_us_per_request,
      2,
    ),
    spans_dropped: sum((t) => t.spans_dropped),
    scrape_ms: [0, 1].map((i) => round(sum((t) => t.scrape_ms[i]!) / sessions.length, 1)) as [
      number,
      number,
    ],
  };
}

/**
 * One session of the turns: both workers started (`tracedFirst`: the traced one first), turns
 * until either has answered nine tenths of a topic of about `seconds` of work for each.
 */
async function tracingTurnsSession(
  bench: Bench,
  spec: BenchModelSpec,
  untracedRps: number,
  batchSize: number | null,
  tracedFirst: boolean,
  seconds: number,
): Promise<TracingTurns> {
  // The measured eight tenths of the topic should take each worker about `seconds`.
  const count = Math.max(1000, Math.round((untracedRps * seconds) / 0.8));
  const base = `bench.${bench.runId}.${spec.name}.turns-${++tracingTurnsRuns}`;
  await createTopics(bench, base);
  say(`  +   tracing cost, interleaved: pre-producing ${fmtInt(count)} requests to ${base}…`);
  await preProduce(bench, spec, base, count);

  const pinned: Record<string, string> =
    batchSize === null
      ? {}
      : {
          STREAMSCORE_BATCHING_AUTOTUNE: 'false',
          STREAMSCORE_BATCHING_MAX_BATCH_SIZE: String(batchSize),
        };
  const sides = [
    { name: 'untraced', extra: {} as Record<string, string> },
    {
      name: 'traced',
      extra: {
        STREAMSCORE_TELEMETRY_OTLP_ENDPOINT: bench.otlpSink.url,
        STREAMSCORE_TELEMETRY_SERVICE_NAME: `streamscore-bench-${spec.name}`,
        // --calibrate: configured alike, but a ratio of 0 turns tracing off (A/A).
        ...(bench.options.calibrate ? { STREAMSCORE_TELEMETRY_TRACES_SAMPLE_RATIO: '0' } : {}),
      },
    },
  ].map((side) => ({
    ...side,
    topics: {
      requests: base,
      results: `${base}.${side.name}.results`,
      deadLetter: `${base}.${side.name}.dead-letter`,
    },
    worker: undefined as WorkerProcess | undefined,
    readings: [] as TurnReading[],
  }));
  for (const side of sides) await createTopics(bench, side.topics.results, side.topics.deadLetter);

  const scrapeMs = new Map<WorkerProcess, number>();
  const read = async (
    worker: WorkerProcess,
  ): Promise<Pick<TurnReading, 'answered' | 'read' | 'mainThreadSeconds' | 'processSeconds'>> => {
    const asked = now();
    const text = await (await fetch(`http://127.0.0.1:${worker.httpPort()}/metrics`)).text();
    const read = now();
    scrapeMs.set(worker, (scrapeMs.get(worker) ?? 0) + (read - asked));
    return {
      read,
      answered:
        metricSum(text, 'streamscore_results_produced_total') +
        metricSum(text, 'streamscore_records_dead_lettered_total'),
      mainThreadSeconds: procThreadCpuSeconds(worker.pid, worker.pid),
      processSeconds: procCpuSeconds(worker.pid),
    };
  };

  const receiverCpu: { before: number | null; after: number | null } = {
    before: null,
    after: null,
  };
  let spansDropped = 0;
  let measuredFrom = -1;
  try {
    // Each starts, is stopped at once, and waits while the other starts: a start-up (tsx, model
    // load and warm-up) takes a core for seconds.
    // Which one starts first matters: in seven A/A runs with the MLP (neither worker traced) the
    // one started second answered 8–16 % faster in six; with the tabular model, 0.3 % slower and
    // 2.6 % faster. The two sessions start them each way round; turns follow the start order.
    const order = tracedFirst ? [sides[1]!, sides[0]!] : sides;
    for (const side of order) {
      side.worker = await startWorkerProcess({
        ...workerEnv(bench, spec.name, side.topics).env,
        ...pinned,
        ...side.extra,
        STREAMSCORE_LOG_LEVEL: 'info',
      });
      side.worker.signal('SIGSTOP');
    }
    const warmed = Math.ceil(count / 10);
    const last = Math.floor((count * 9) / 10);
    // Each worker's time is half the wall clock.
    const deadline = now() + 2 * phaseTimeoutMs(count);
    for (let turn = 0; ; turn++) {
      for (const side of order) {
        const worker = side.worker!;
        const brokerBegan = procCpuSeconds(bench.broker?.pid);
        worker.signal('SIGCONT');
        const began = now();
        await sleep(TURN_MS);
        const reading = await read(worker);
        const brokerRead = procCpuSeconds(bench.broker?.pid);
        worker.signal('SIGSTOP');
        const ended = now();
        side.readings.push({
          began,
          ended,
          ...reading,
          // The last one after the stop: the broker may still finish this side's last requests.
          broker: {
            began: brokerBegan,
            read: brokerRead,
            ended: procCpuSeconds(bench.broker?.pid),
          },
        });
      }
      const answered = sides.map((side) => side.readings.at(-1)!.answered);
      if (measuredFrom < 0 && answered.every((a) => a >= warmed)) {
        measuredFrom = turn;
        receiverCpu.before = procCpuSeconds(bench.otlpSink.pid);
      }
      if (measuredFrom >= 0 && answered.some((a) => a >= last)) {
        receiverCpu.after = procCpuSeconds(bench.otlpSink.pid);
        break;
      }
      if (now() > deadline) {
        throw new Error(
          `the interleaved phase took too long: ${answered.join(' and ')} of ${count} answered`,
        );
      }
    }
    const traced = sides[1]!.worker!;
    traced.signal('SIGCONT');
    // The tracing thread reports its processor's counts every second.
    await sleep(1500);
    const text = await (await fetch(`http://127.0.0.1:${traced.httpPort()}/metrics`)).text();
    spansDropped = metricSum(
      text,
      'otel_sdk_processor_span_processed_total',
      'error_type="queue_full"',
    );
  } finally {
    for (const side of sides) {
      side.worker?.signal('SIGCONT');
      if (side.worker) await side.worker.stop(60_000).catch(() => side.worker!.kill());
    }
  }

  // Between two readings of a worker it ran from the first reading to its turn's end, then from
  // its next turn's start to the second reading: nothing else (it was stopped).
  const over = (readings: TurnReading[], from: number, to: number) => {
    let ms = 0;
    for (let k = from + 1; k <= to; k++) {
      ms +=
        readings[k - 1]!.ended - readings[k - 1]!.read + (readings[k]!.read - readings[k]!.began);
    }
    const delta = (f: (r: TurnReading) => number | null): number | null => {
      const a = f(readings[from]!);
      const b = f(readings[to]!);
      return a === null || b === null ? null : b - a;
    };
    // The broker serves both sides: only its CPU within this side's turns counts.
    let broker: number | null = 0;
    for (let k = from; k <= to && broker !== null; k++) {
      const { began, read, ended } = readings[k]!.broker;
      const first = k === from ? read : began;
      const last = k === to ? read : ended;
      broker = first === null || last === null ? null : broker + (last - first);
    }
    return {
      records: delta((r) => r.answered)!,
      seconds: ms / 1000,
      main: delta((r) => r.mainThreadSeconds),
      cpu: delta((r) => r.processSeconds),
      broker,
    };
  };
  const lastTurn = sides[0]!.readings.length - 1;
  const side = (i: number): TurnsSide =>
    turnsSide(over(sides[i]!.readings, measuredFrom, lastTurn));
  const cost = (from: number, to: number): number => {
    const u = over(sides[0]!.readings, from, to);
    const t = over(sides[1]!.readings, from, to);
    return round((1 - t.records / t.seconds / (u.records / u.seconds)) * 100, 1);
  };
  const turns = lastTurn - measuredFrom;
  const fifths: number[] = [];
  for (let f = 0; f < 5; f++) {
    const from = measuredFrom + Math.round((turns * f) / 5);
    const to = measuredFrom + Math.round((turns * (f + 1)) / 5);
    if (to > from) fifths.push(cost(from, to));
  }
  const traced = side(1);
  const tracingCostPct = cost(measuredFrom, lastTurn);
  return {
    requests: count,
    turn_ms: TURN_MS,
    turns,
    untraced: side(0),
    traced,
    tracing_cost_pct: tracingCostPct,
    tracing_cost_pct_by_fifth: fifths,
    sessions: [{ traced_started_first: tracedFirst, tracing_cost_pct: tracingCostPct }],
    receiver_us_per_request:
      receiverCpu.before === null || receiverCpu.after === null
        ? null
        : round(((receiverCpu.after - receiverCpu.before) * 1e6) / traced.records, 2),
    spans_dropped: spansDropped,
    scrape_ms: sides.map((side) =>
      round((scrapeMs.get(side.worker!) ?? 0) / side.readings.length, 1),
    ) as [number, number],
  };
}

/** --switched: how long each measured stretch of one mode lasts, once the switch has settled. */
const SWITCHED_MEASURE_MS = 1500;
/**
 * After the requests in flight at a switch are answered: time for the tracing thread to finish
 * the spans they left (a hand-over waits ≤ 200 ms; a batch fills in tens of ms at these rates).
 */
const SWITCHED_SETTLE_MARGIN_MS = 250;
/** Modes in the order A B B A, repeated: a steady drift of the machine falls on both alike. */
const SWITCHED_PATTERN = [true, false, false, true] as const;

/** Requests answered traced before the first switch (JIT, the first fetches); a tenth if less. */
const SWITCHED_WARM_UP = 150_000;

/** The pre-produced topic every --switched run of a model reads (each in a group of its own). */
interface SwitchedTopic {
  topic: string;
  count: number;
  /** Measured time each mode gets per run. */
  seconds: number;
}

/**
 * Pre-produces the topic for all --switched runs of a model: each mode measures `seconds` a run,
 * settling after each switch takes about half as long again, and warm-up adds up to
 * SWITCHED_WARM_UP, at up to twice the model's typical rate (a run ends at nine tenths of it).
 */
async function switchedTopic(bench: Bench, spec: BenchModelSpec): Promise<SwitchedTopic> {
  const seconds = bench.options.quick
    ? TURNS_SECONDS_PER_WORKER / 5
    : TURNS_SECONDS_PER_WORKER * bench.options.requests;
  const count = Math.round((spec.typicalRps * 2 * seconds * 2 * 1.5 + SWITCHED_WARM_UP) / 0.9);
  const topic = `bench.${bench.runId}.${spec.name}.switched`;
  await createTopics(bench, topic);
  say(`  pre-producing ${fmtInt(count)} requests to ${topic}, read by every run…`);
  await preProduce(bench, spec, topic, count);
  return { topic, count, seconds };
}

/** --switched: one traced worker, its tracing paused and resumed stretch by stretch. */
interface SwitchedTracing {
  method: 'switched';
  /** Requests in the run's topic. */
  requests: number;
  measure_ms: number;
  /** Measured stretches of each mode. */
  turns: number;
  /** Stretches with tracing paused (POST /tracing/pause): the worker as if tracing were off. */
  untraced: TurnsSide;
  /** Stretches with tracing on at 100 % (POST /tracing/resume). */
  traced: TurnsSide;
  /** 1 − traced ÷ untraced rate over all measured stretches, in percent. */
  tracing_cost_pct: number;
  /** The same over each fifth of the run's stretches, in order: how steady it was. */
  tracing_cost_pct_by_fifth: number[];
  /** Mean wait after a switch before measuring (in-flight requests answered, plus a margin), ms. */
  settle_ms: number;
  /** Each measured stretch in order: traced or not, and its rate (requests a second). */
  stretches: { traced: boolean; rps: number }[];
  /** CPU of the OTLP receiver (a discarding one) during traced stretches per request, µs. */
  receiver_us_per_request: number | null;
  spans_dropped: number;
}

function saySwitched(s: SwitchedTracing, calibrate: boolean): void {
  // --calibrate: both modes are paused; "on" names the stretches where tracing would be on.
  const [on, off] = calibrate ? ['"on" (paused too)', 'paused'] : ['traced', 'paused'];
  say(
    `      tracing costs ${s.tracing_cost_pct} %: ${fmtRate(s.traced.rps)}/s ${on} vs ${fmtRate(s.untraced.rps)}/s ${off} over ${s.turns} stretches of ${s.measure_ms} ms each (by fifths: ${s.tracing_cost_pct_by_fifth.join(', ')} %); settled in ${s.settle_ms} ms; main thread ${s.traced.main_thread_us_per_request ?? '?'} vs ${s.untraced.main_thread_us_per_request ?? '?'} µs per request, process ${s.traced.process_us_per_request ?? '?'} vs ${s.untraced.process_us_per_request ?? '?'}, broker ${s.traced.broker_us_per_request ?? '?'} vs ${s.untraced.broker_us_per_request ?? '?'}, receiver ${s.receiver_us_per_request ?? '?'}; ${s.spans_dropped} spans dropped`,
  );
}

/** One measured stretch of one mode. */
interface Stretch extends SideTotals {
  traced: boolean;
  receiver: number | null;
}

/**
 * Tracing's cost with the worker process held constant: one `streamscore run`, tracing on at
 * 100 % to the discarding receiver, reads a pre-produced topic while this switches its tracing
 * off and on (POST /tracing/pause, /tracing/resume) in the order on, off, off, on, ….
 * After each switch it waits until every request read before it is answered (the in-flight
 * count at the switch), plus SWITCHED_SETTLE_MARGIN_MS for the tracing thread, then measures
 * SWITCHED_MEASURE_MS: so each measured stretch holds only requests of its own mode, and the
 * tracing thread's work on a traced stretch's spans falls in that stretch or in the unmeasured
 * settling after it. With two processes (tracingTurns) each run compares two processes, whose
 * own speeds differ by a few points; here both modes share one process, its JIT, its heap and
 * its place in the broker's eyes. Runs still scatter by about ±4 points (A/A), from the ±10 % a
 * 1.5 s stretch's rate moves in one mode. --calibrate pauses at every switch (both modes off).
 */
async function tracingSwitched(
  bench: Bench,
  spec: BenchModelSpec,
  requests: SwitchedTopic,
  batchSize: number,
): Promise<SwitchedTracing> {
  const { seconds, count } = requests;
  const base = `${requests.topic}.run-${++tracingTurnsRuns}`;
  const topics = {
    requests: requests.topic,
    results: `${base}.results`,
    deadLetter: `${base}.dead-letter`,
  };
  await createTopics(bench, topics.results, topics.deadLetter);

  const worker = await startWorkerProcess({
    ...workerEnv(bench, spec.name, topics).env,
    STREAMSCORE_BATCHING_AUTOTUNE: 'false',
    STREAMSCORE_BATCHING_MAX_BATCH_SIZE: String(batchSize),
    STREAMSCORE_TELEMETRY_OTLP_ENDPOINT: bench.otlpSink.url,
    STREAMSCORE_TELEMETRY_SERVICE_NAME: `streamscore-bench-${spec.name}`,
    STREAMSCORE_LOG_LEVEL: 'info',
  });
  const url = `http://127.0.0.1:${worker.httpPort()}`;
  const read = async () => {
    const text = await (await fetch(`${url}/metrics`)).text();
    return {
      at: now(),
      answered:
        metricSum(text, 'streamscore_results_produced_total') +
        metricSum(text, 'streamscore_records_dead_lettered_total'),
      inFlight: metricSum(text, 'streamscore_requests_in_flight'),
      dropped: metricSum(
        text,
        'otel_sdk_processor_span_processed_total',
        'error_type="queue_full"',
      ),
      main: procThreadCpuSeconds(worker.pid, worker.pid),
      cpu: procCpuSeconds(worker.pid),
      broker: procCpuSeconds(bench.broker?.pid),
      receiver: procCpuSeconds(bench.otlpSink.pid),
    };
  };
  const switchTo = async (traced: boolean) => {
    // --calibrate: the same call at every switch, tracing off in both modes.
    const path = traced && !bench.options.calibrate ? '/tracing/resume' : '/tracing/pause';
    const response = await fetch(`${url}${path}`, { method: 'POST' });
    if (response.status !== 200) {
      throw new Error(`POST ${path} answered ${response.status}: ${await response.text()}`);
    }
  };
  const delta = (a: number | null, b: number | null) => (a === null || b === null ? null : b - a);

  const stretches: Stretch[] = [];
  let settleMs = 0;
  let spansDropped = 0;
  /** Measured seconds of each mode so far (paused, traced). */
  const measured = [0, 0];
  try {
    const warmed = Math.min(Math.ceil(count / 10), SWITCHED_WARM_UP);
    const last = Math.floor((count * 9) / 10);
    const deadline = now() + 4 * phaseTimeoutMs(count);
    // Until warmed up (JIT, the first fetches), it runs traced, unmeasured.
    while ((await read()).answered < warmed) {
      if (now() > deadline) throw new Error('the switched phase did not warm up in time');
      await sleep(100);
    }
    for (let k = 0; ; k++) {
      const traced = SWITCHED_PATTERN[k % SWITCHED_PATTERN.length]!;
      await switchTo(traced);
      const switched = await read();
      const target = switched.answered + switched.inFlight;
      let answered = switched.answered;
      while (answered < target && answered < last) {
        await sleep(50);
        answered = (await read()).answered;
      }
      await sleep(SWITCHED_SETTLE_MARGIN_MS);
      const from = await read();
      settleMs += from.at - switched.at;
      await sleep(SWITCHED_MEASURE_MS);
      const to = await read();
      spansDropped = to.dropped;
      if (to.answered >= last) break;
      measured[traced ? 1 : 0]! += (to.at - from.at) / 1000;
      stretches.push({
        traced,
        records: to.answered - from.answered,
        seconds: (to.at - from.at) / 1000,
        main: delta(from.main, to.main),
        cpu: delta(from.cpu, to.cpu),
        broker: delta(from.broker, to.broker),
        receiver: delta(from.receiver, to.receiver),
      });
      const groupDone = (k + 1) % SWITCHED_PATTERN.length === 0;
      if (groupDone && measured.every((m) => m >= seconds)) break;
      if (now() > deadline) {
        throw new Error(`the switched phase took too long: ${to.answered} of ${count} answered`);
      }
    }
  } finally {
    await worker.stop(60_000).catch(() => worker.kill());
  }
  /** A total over stretches; null if any stretch lacks it. */
  const total = (list: Stretch[], f: (s: Stretch) => number | null): number | null =>
    list.some((s) => f(s) === null) ? null : list.reduce((n, s) => n + f(s)!, 0);
  const side = (list: Stretch[]): TurnsSide =>
    turnsSide({
      records: total(list, (s) => s.records)!,
      seconds: total(list, (s) => s.seconds)!,
      main: total(list, (s) => s.main),
      cpu: total(list, (s) => s.cpu),
      broker: total(list, (s) => s.broker),
    });
  const cost = (list: Stretch[]): number => {
    const on = side(list.filter((s) => s.traced));
    const off = side(list.filter((s) => !s.traced));
    return round((1 - on.rps / off.rps) * 100, 1);
  };
  const fifths: number[] = [];
  for (let f = 0; f < 5; f++) {
    const part = stretches.slice(
      Math.round((stretches.length * f) / 5),
      Math.round((stretches.length * (f + 1)) / 5),
    );
    if (part.some((s) => s.traced) && part.some((s) => !s.traced)) fifths.push(cost(part));
  }
  if (stretches.length < 2) throw new Error('the switched phase measured fewer than two stretches');
  const tracedStretches = stretches.filter((s) => s.traced);
  const traced = side(tracedStretches);
  const receiverSeconds = total(tracedStretches, (s) => s.receiver);
  return {
    method: 'switched',
    requests: count,
    measure_ms: SWITCHED_MEASURE_MS,
    turns: Math.floor(stretches.length / 2),
    untraced: side(stretches.filter((s) => !s.traced)),
    traced,
    tracing_cost_pct: cost(stretches),
    tracing_cost_pct_by_fifth: fifths,
    settle_ms: round(settleMs / (stretches.length + 1)),
    stretches: stretches.map((s) => ({ traced: s.traced, rps: round(s.records / s.seconds) })),
    receiver_us_per_request:
      receiverSeconds === null ? null : round((receiverSeconds * 1e6) / traced.records, 2),
    spans_dropped: spansDropped,
  };
}

/**
 * Latency: `streamscore run` in its own process (the worker alone in its event loop and heap),
 * on a fresh, empty topic. After it has joined, a paced producer in this process offers 25, 50
 * and 75 % of the saturation rate, each for a fixed time, and a reader here computes end-to-end
 * latency = result read time − requestedAt. Each load is answered in full before the next one
 * starts. With --overload, 3× the saturation rate follows, then the drain. The worker is then
 * stopped with SIGTERM; its memory and CPU are read from /proc.
 */
async function latencyAndOverload(
  bench: Bench,
  spec: BenchModelSpec,
  saturationRps: number,
): Promise<{
  loads: LatencyAtLoad[];
  overload?: OverloadResult;
  worker: WorkerProcessReport;
  bench_process_peak_rss_mb: number;
}> {
  const base = `bench.${bench.runId}.${spec.name}.latency`;
  const topics = { requests: base, results: `${base}.results`, deadLetter: `${base}.dead-letter` };
  await createTopics(bench, topics.requests, topics.results, topics.deadLetter);
  const { env, config } = workerEnv(bench, spec.name, topics);
  collectGarbage();
  const rssWindow = bench.rss.window();
  const producer = newProducer(bench.kafka);
  const codec = new AvroCodec();
  const seen = new Map<
    string,
    { latency: number[]; toWorker: number[]; batch: number[]; toReader: number[] }
  >();
  let overloadAnswered = 0;
  let worker: WorkerProcess | undefined;
  let reader: { stop(): Promise<void> } | undefined;
  const loads: LatencyAtLoad[] = [];
  let overload: OverloadResult | undefined;
  let exit: WorkerExit;
  let peakBeforeOverload = 0;
  try {
    await producer.connect();
    worker = await startWorkerProcess(env);
    const w = worker;
    reader = await startReader(bench, topics.results, (message, readAt) => {
      // Overload results are only counted (the key is the request's: `O-<i>`), not decoded.
      if (message.key?.[0] === 0x4f /* O */) {
        overloadAnswered++;
        return;
      }
      const r = codec.decodeResult(message.value!);
      const prefix = r.id.slice(0, r.id.indexOf('-'));
      let s = seen.get(prefix);
      if (!s) seen.set(prefix, (s = { latency: [], toWorker: [], batch: [], toReader: [] }));
      s.latency.push(readAt - r.requestedAt);
      s.toWorker.push(r.receivedAt - r.requestedAt);
      s.batch.push(r.inferredAt - r.receivedAt);
      s.toReader.push(readAt - r.inferredAt);
    });
    const answered = (prefix: string) => seen.get(prefix)?.latency.length ?? 0;

    // Warm-up at the lowest load (connections, first fetches, JIT, and time for a batch-size
    // autotuner to settle); not reported.
    const warmRate = (saturationRps * LOAD_LEVELS[0]) / 100;
    const warmSeconds = Math.min(3, bench.options.loadSeconds / 2);
    const warm = await offer(producer, spec, topics.requests, 'W', warmRate, warmSeconds);
    await until(60_000, 'the latency warm-up', () => answered('W') >= warm.sent, 20);

    for (const pct of LOAD_LEVELS) {
      const rate = (saturationRps * pct) / 100;
      const prefix = `L${pct}`;
      const cpu = cpuCores(w.pid, bench.broker?.pid);
      const sent = await offer(
        producer,
        spec,
        topics.requests,
        prefix,
        rate,
        bench.options.loadSeconds,
      );
      await until(
        60_000,
        `answering the ${pct} % load`,
        () => answered(prefix) >= sent.sent,
        20,
        () => `${answered(prefix)} of ${sent.sent} answered`,
      );
      const s = seen.get(prefix)!;
      loads.push({
        load_pct: pct,
        offered_rps: round(rate),
        achieved_rps: round(sent.rps),
        requests: sent.sent,
        answered: s.latency.length,
        p50_ms: percentile(s.latency, 50),
        p95_ms: percentile(s.latency, 95),
        p99_ms: percentile(s.latency, 99),
        max_ms: percentile(s.latency, 100),
        breakdown_p50_ms: {
          to_worker: percentile(s.toWorker, 50),
          batch_and_inference: percentile(s.batch, 50),
          to_reader: percentile(s.toReader, 50),
        },
        cpu_cores: cpu(),
      });
    }

    if (bench.options.overload) {
      peakBeforeOverload = w.peakMb();
      const reset = w.resetPeak();
      const rssPerSecond: number[] = [];
      const sampler = setInterval(() => {
        const m = procMemory(w.pid);
        if (m) rssPerSecond.push(round(m.rss));
      }, 1000);
      const benchWindow = bench.rss.window();
      const cpu = cpuCores(w.pid, bench.broker?.pid);
      try {
        const rate = saturationRps * 3;
        say(`  overload: offering ${fmtRate(rate)}/s for ${bench.options.overloadSeconds} s…`);
        const o = await offer(
          producer,
          spec,
          topics.requests,
          'O',
          rate,
          bench.options.overloadSeconds,
        );
        const offerEnd = now();
        const drainedAt = await until(
          900_000,
          'draining after the overload',
          () => overloadAnswered >= o.sent,
          50,
          () => `${overloadAnswered} of ${o.sent} answered`,
        );
        overload = {
          offered_rps: round(rate),
          achieved_offer_rps: round(o.rps),
          seconds: round(o.seconds, 1),
          requests: o.sent,
          peak_rss_mb: 0,
          peak_rss_reset: reset,
          rss_mb_per_second: rssPerSecond,
          bench_process_peak_rss_mb: 0,
          cpu_cores: cpu(),
          drain_seconds: round((drainedAt - offerEnd) / 1000, 1),
          drained: false,
        };
      } finally {
        clearInterval(sampler);
      }
      overload.bench_process_peak_rss_mb = round(benchWindow());
    }
    await reader.stop();
    reader = undefined;
    exit = await w.stop(config.shutdown.drainTimeoutMs + 60_000);
    if (overload) {
      overload.peak_rss_mb = round(w.peakMb());
      overload.drained =
        exit.exit_code === 0 &&
        exit.stopped?.['drained'] === true &&
        overloadAnswered >= overload.requests;
    }
  } finally {
    await reader?.stop();
    worker?.kill();
    await producer.disconnect();
  }
  const batchLog = worker.logs.find(
    (l) => typeof l['batchSize'] === 'number' && l['msg'] === 'batch size autotuned',
  );
  return {
    loads,
    ...(overload ? { overload } : {}),
    worker: {
      command: `node ${WORKER_ARGS.join(' ')}`,
      env,
      pid: worker.pid,
      startup_seconds: round(worker.startupSeconds, 1),
      batch_size:
        typeof batchLog?.['batchSize'] === 'number'
          ? batchLog['batchSize']
          : config.batching.autotune
            ? null
            : config.batching.maxBatchSize,
      peak_rss_mb: round(Math.max(peakBeforeOverload, worker.peakMb())),
      ...exit,
      warnings: worker.logs.filter((l) => typeof l['level'] === 'number' && l['level'] >= 40),
    },
    bench_process_peak_rss_mb: round(rssWindow()),
  };
}

// ─── one model ──────────────────────────────────────────────────────────────────────────────────

interface ModelReport {
  // The fields the issue asks for.
  streamscore_rps: number;
  io_ceiling_rps: number;
  compute_ceiling_rps: number;
  naive_rps: number;
  ratio_vs_ceiling: number;
  ratio_vs_naive: number;
  p99_ms_at_50pct_load: number;
  /** Peak RSS (VmHWM) of the `streamscore run` process of the latency loads (and overload). */
  peak_rss_mb: number;
  /** The latency loads and the overload ran the worker as its own process. */
  worker_process: true;
  /** This benchmark process's peak RSS during the streamscore phases (the in-process throughput worker included). */
  bench_process_peak_rss_mb: number;
  machine: Machine;
  date: string;
  // More detail.
  title: string;
  requests: number;
  request_bytes: number;
  pre_produce_rps: number;
  compute_best_batch: number;
  compute_by_batch: ComputeCeiling['by_batch'];
  phases: {
    io_ceiling: Throughput;
    naive: NaiveResult;
    streamscore: StreamscoreThroughput;
    /** The same worker with delivery.mode exactly-once (results read back read_committed). */
    streamscore_exactly_once: StreamscoreThroughput;
    /** The same, spans exported to a local Jaeger v2 that stores them, on the same cores. */
    streamscore_traced_jaeger?: StreamscoreThroughput;
  };
  /** Each round's untraced rate (streamscore_rps is their median), records/s. */
  streamscore_rounds_rps?: number[];
  /** The warm-up phase before the rounds (autotunes; not in any median), records/s. */
  streamscore_warm_up_rps?: number;
  /**
   * Throughput lost to tracing at 100 %: 1 − traced ÷ untraced rate, from an untraced and a traced
   * `streamscore run` taking turns (`tracing`), in percent.
   */
  tracing_cost_pct: number | null;
  tracing?: TracingTurns;
  /** The batch size the warm-up phase's autotune chose, kept for every later phase (null: none logged). */
  batch_size_pinned?: number | null;
  /** Each round's main-thread CPU per request, µs (see StreamscoreThroughput). */
  main_thread_us_per_request_rounds?: (number | null)[];
  /** streamscore with tracing at 100 % into a local Jaeger v2; null if no Jaeger. */
  streamscore_traced_jaeger_rps?: number | null;
  /** Throughput lost with Jaeger storing the spans on the same cores, in percent. */
  tracing_jaeger_cost_pct?: number | null;
  /** streamscore with delivery.mode exactly-once, records/s. */
  streamscore_exactly_once_rps: number;
  /** Throughput lost to exactly-once: 1 − exactly-once ÷ at-least-once, in percent. */
  exactly_once_cost_pct: number;
  latency: LatencyAtLoad[];
  /** The `streamscore run` process of the latency loads and the overload. */
  latency_worker: WorkerProcessReport;
  overload?: OverloadResult;
  targets: Target[];
  /** The configuration the worker ran with: defaults, apart from brokers, group and topics. */
  streamscore_config: Pick<StreamscoreConfig, 'batching' | 'model' | 'output' | 'commit'> & {
    kafka: Pick<StreamscoreConfig['kafka'], 'fetchMaxWaitMs' | 'sessionTimeoutMs' | 'compression'>;
  };
}

interface Target {
  what: string;
  target: string;
  actual: string;
  met: boolean;
}

async function benchModel(
  bench: Bench,
  name: BenchModelName,
  machine: Machine,
): Promise<ModelReport> {
  const spec = BENCH_MODELS[name];
  const date = new Date().toISOString();
  const count = Math.max(100, Math.round(spec.defaultRequests * bench.options.requests));
  const requests = `bench.${bench.runId}.${name}.requests`;
  await createTopics(bench, requests, `${requests}.io`, `${requests}.naive`);

  say(
    `\n• ${spec.title}: pre-producing ${fmtInt(count)} requests to ${requests} (${PARTITIONS} partitions)…`,
  );
  const pre = await preProduce(bench, spec, requests, count);
  say(`  ${fmtInt(count)} × ${pre.bytesPerRequest} B in ${pre.seconds.toFixed(1)} s`);

  say('  1/4 I/O ceiling: kafkajs eachBatch → sendBatch(acks -1), the same bytes…');
  const io = await ioCeiling(bench, requests, `${requests}.io`, count);
  say(`      ${fmtRate(io.rps)}/s`);

  say('  2/4 compute ceiling: runner.predict on prepared batches, batch 1…256…');
  const { tf, backend } = await selectBackend('wasm', silentLogger);
  const runner = await loadModel(benchModelDir(name), { tf, backend, log: silentLogger });
  let compute: ComputeCeiling;
  let naive: NaiveResult;
  const defaults = loadConfig({ env: {} });
  try {
    compute = await computeCeiling(runner, spec, bench.options.quick);
    say(`      ${fmtRate(compute.rps)}/s at batch ${compute.best_batch} (${backend})`);
    say(
      `  3/4 naive worker: eachMessage → decode → predict(1) → encode → await send (≤ ${bench.options.naiveSeconds} s)…`,
    );
    naive = await naiveWorker(bench, runner, defaults, requests, `${requests}.naive`, count);
    say(
      `      ${fmtRate(naive.rps)}/s (${fmtInt(naive.records)} requests in ${naive.seconds.toFixed(1)} s)`,
    );
  } finally {
    await runner.dispose();
  }

  say('  4/4 streamscore with defaults (startService, in this process)…');
  // The throughput phase stays in this process: its window is read from the worker's own
  // counters (polled every 2 ms); the latency loads and the overload run `streamscore run`.
  // Several rounds, the median reported: one phase on this shared machine can be 15 % off.
  type Run = Awaited<ReturnType<typeof streamscoreThroughput>>;
  const untracedRuns: Run[] = [];
  const tracedSay = (t: Run) =>
    say(
      `      ${fmtRate(t.result.rps)}/s (mean batch ${t.result.mean_batch}, ${t.result.seconds.toFixed(1)} s; main thread ${t.result.main_thread_us_per_request ?? '?'} µs per request; GC ${t.result.gc.pause_ms} ms; receiver ${t.result.cpu_cores.receiver ?? '?'} cores; ${t.result.spans_dropped ?? '?'} spans dropped)`,
    );
  // Autotune measures the model at start-up, and on a noisy machine its choice varies from one
  // start to the next (32, 64 or 128 for the same model in one run), which moves throughput more
  // than what the phases compare. So a warm-up phase autotunes and every measured one (the rounds,
  // exactly-once, Jaeger, the tracing turns) keeps its choice: the phases differ only in what they
  // test. The warm-up also runs the worker's code hot before anything counts: the first phase of
  // a process ran slower than the rest (the JIT was still compiling it).
  say('      warm-up (autotunes; not counted)…');
  const warmUp = await streamscoreThroughput(bench, name, requests, count, 'at-least-once', null);
  const pinned = warmUp.result.batch_size_limit;
  say(
    `      ${fmtRate(warmUp.result.rps)}/s${pinned === null ? '' : `; autotune chose batches of ${pinned}: kept for every later phase`}`,
  );
  for (let round = 1; round <= bench.options.rounds; round++) {
    const of = bench.options.rounds > 1 ? ` (round ${round} of ${bench.options.rounds})` : '';
    say(`  4/4 streamscore with defaults${of}…`);
    const run = await streamscoreThroughput(
      bench,
      name,
      requests,
      count,
      'at-least-once',
      null,
      pinned,
    );
    untracedRuns.push(run);
    say(
      `      ${fmtRate(run.result.rps)}/s (mean batch ${run.result.mean_batch}, ${run.result.seconds.toFixed(1)} s; main thread ${run.result.main_thread_us_per_request ?? '?'} µs per request; GC ${run.result.gc.pause_ms} ms, ${run.result.gc.major} full)`,
    );
  }
  const medianRun = (runs: Run[]): Run =>
    [...runs].sort((a, b) => a.result.rps - b.result.rps)[Math.floor(runs.length / 2)]!;
  const ss = medianRun(untracedRuns);

  say('  +   streamscore with delivery.mode exactly-once (per-partition transactions)…');
  const eos = await streamscoreThroughput(
    bench,
    name,
    requests,
    count,
    'exactly-once',
    null,
    pinned,
  );
  say(
    `      ${fmtRate(eos.result.rps)}/s (mean batch ${eos.result.mean_batch}, ${eos.result.seconds.toFixed(1)} s)`,
  );

  let tracedJaeger: Run | undefined;
  if (bench.jaeger) {
    say('  +   streamscore with tracing at 100 % (spans over OTLP to a local Jaeger v2)…');
    tracedJaeger = await streamscoreThroughput(
      bench,
      name,
      requests,
      count,
      'at-least-once',
      { kind: 'jaeger', endpoint: bench.jaeger.otlpHttpEndpoint, pid: bench.jaeger.pid },
      pinned,
    );
    tracedSay(tracedJaeger);
  }

  const turns = await tracingTurns(bench, spec, ss.result.rps, pinned);
  sayTurns(turns);

  say(
    `  latency: \`streamscore run\` in its own process; ${LOAD_LEVELS.map((p) => `${p} %`).join(', ')} of ${fmtRate(ss.result.rps)}/s, ${bench.options.loadSeconds} s each…`,
  );
  const lat = await latencyAndOverload(bench, spec, ss.result.rps);

  const ceiling = Math.min(io.rps, compute.rps);
  const at50 = lat.loads.find((l) => l.load_pct === 50)!;
  const report: ModelReport = {
    streamscore_rps: round(ss.result.rps),
    streamscore_exactly_once_rps: round(eos.result.rps),
    exactly_once_cost_pct: round((1 - eos.result.rps / ss.result.rps) * 100, 1),
    streamscore_rounds_rps: untracedRuns.map((r) => round(r.result.rps)),
    streamscore_warm_up_rps: round(warmUp.result.rps),
    tracing_cost_pct: turns.tracing_cost_pct,
    tracing: turns,
    batch_size_pinned: pinned,
    main_thread_us_per_request_rounds: untracedRuns.map((r) => r.result.main_thread_us_per_request),
    streamscore_traced_jaeger_rps: tracedJaeger ? round(tracedJaeger.result.rps) : null,
    tracing_jaeger_cost_pct: tracedJaeger
      ? round((1 - tracedJaeger.result.rps / ss.result.rps) * 100, 1)
      : null,
    io_ceiling_rps: round(io.rps),
    compute_ceiling_rps: round(compute.rps),
    naive_rps: round(naive.rps),
    ratio_vs_ceiling: round(ss.result.rps / ceiling, 3),
    ratio_vs_naive: round(ss.result.rps / naive.rps, 2),
    p99_ms_at_50pct_load: at50.p99_ms,
    peak_rss_mb: lat.worker.peak_rss_mb,
    worker_process: true,
    bench_process_peak_rss_mb: Math.max(ss.result.peak_rss_mb, lat.bench_process_peak_rss_mb),
    machine: { ...machine, backend: ss.result.backend },
    date,
    title: spec.title,
    requests: count,
    request_bytes: pre.bytesPerRequest,
    pre_produce_rps: round(count / pre.seconds),
    compute_best_batch: compute.best_batch,
    compute_by_batch: compute.by_batch,
    phases: {
      io_ceiling: roundThroughput(io),
      naive: roundThroughput(naive),
      streamscore: roundThroughput(ss.result),
      streamscore_exactly_once: roundThroughput(eos.result),
      ...(tracedJaeger ? { streamscore_traced_jaeger: roundThroughput(tracedJaeger.result) } : {}),
    },
    latency: lat.loads,
    latency_worker: lat.worker,
    ...(lat.overload ? { overload: lat.overload } : {}),
    targets: [],
    streamscore_config: {
      batching: ss.config.batching,
      model: { ...ss.config.model, repository: path.relative(ROOT, ss.config.model.repository) },
      output: ss.config.output,
      commit: ss.config.commit,
      kafka: {
        fetchMaxWaitMs: ss.config.kafka.fetchMaxWaitMs,
        sessionTimeoutMs: ss.config.kafka.sessionTimeoutMs,
        compression: ss.config.kafka.compression,
      },
    },
  };
  report.targets = targetsFor(
    name,
    report,
    compute,
    ss.config,
    lat.worker.batch_size ?? ss.result.batch_size_limit ?? ss.config.batching.maxBatchSize,
  );
  return report;
}

function roundThroughput<T extends Throughput>(t: T): T {
  return { ...t, seconds: round(t.seconds, 2), rps: round(t.rps) };
}

/** The issue's targets. They are reported, never asserted: benchmarks are not tests. */
function targetsFor(
  name: BenchModelName,
  r: ModelReport,
  compute: ComputeCeiling,
  config: StreamscoreConfig,
  batchSize: number,
): Target[] {
  const targets: Target[] = [];
  if (name === 'tabular') {
    const vsIo = r.streamscore_rps / r.io_ceiling_rps;
    targets.push({
      what: 'throughput vs I/O ceiling',
      target: '≥ 0.85 × I/O ceiling',
      actual: `${vsIo.toFixed(2)} ×`,
      met: vsIo >= 0.85,
    });
    targets.push({
      what: 'throughput vs naive',
      target: '≥ 10 × naive',
      actual: `${r.ratio_vs_naive.toFixed(1)} ×`,
      met: r.ratio_vs_naive >= 10,
    });
  } else {
    targets.push({
      what: 'throughput vs ceilings',
      target: '≥ 0.85 × min(I/O, compute)',
      actual: `${r.ratio_vs_ceiling.toFixed(2)} ×`,
      met: r.ratio_vs_ceiling >= 0.85,
    });
  }
  // "Batch inference time": one predict call at the batch size the worker used (autotuned or
  // configured; the nearest measured power of two at or below it), from the compute phase.
  const sizes = Object.keys(compute.by_batch).map(Number);
  const size = Math.max(...sizes.filter((s) => s <= batchSize), 1);
  const batchMs = compute.by_batch[size]!.ms_per_batch;
  const limit = config.batching.maxDelayMs + 2 * batchMs + 20;
  targets.push({
    what: 'p99 latency at 50 % load',
    target: `≤ ${limit.toFixed(1)} ms (max delay ${config.batching.maxDelayMs} + 2 × ${batchMs.toFixed(2)} ms at batch ${size} + 20)`,
    actual: `${r.p99_ms_at_50pct_load} ms`,
    met: r.p99_ms_at_50pct_load <= limit,
  });
  if (r.overload) {
    targets.push({
      what: 'worker peak RSS under 3× overload',
      target: '< 1024 MB (worker process VmHWM), and drains',
      actual: `${r.overload.peak_rss_mb} MB, drained in ${r.overload.drain_seconds} s`,
      met: r.overload.peak_rss_mb < 1024 && r.overload.drained,
    });
  }
  return targets;
}

// ─── output ─────────────────────────────────────────────────────────────────────────────────────

interface Machine {
  cores: number;
  cpu_model: string;
  node: string;
  backend: string;
  platform: string;
  memory_gb: number;
  kafka: string;
  /** 1-minute load average before and after the run: other work on the machine skews results. */
  load_average: { start: number; end: number | null };
}

const fmtInt = (n: number) => Math.round(n).toLocaleString('en-US');

/** 1234 → "1,234"; 123456 → "123k"; keeps three significant digits past 10k. */
function fmtRate(n: number): string {
  if (!Number.isFinite(n)) return '—';
  if (n >= 1e6) return `${(n / 1e6).toPrecision(3)}M`;
  if (n >= 1e4) return `${(n / 1e3).toPrecision(3)}k`;
  return fmtInt(n);
}

function printTable(r: ModelReport): void {
  const row = (a: string, b: string, c = '') => say(`  ${a.padEnd(36)}${b.padStart(12)}   ${c}`);
  const io = r.phases.io_ceiling;
  const ss = r.phases.streamscore;
  say(
    `\n${r.title} — ${fmtInt(r.requests)} requests of ${r.request_bytes} B, ${PARTITIONS} partitions`,
  );
  row('phase', 'records/s', 'how');
  row(
    'I/O ceiling',
    fmtInt(r.io_ceiling_rps),
    `kafkajs eachBatch → sendBatch, acks -1 (cpu ${io.cpu_cores.bench} + broker ${io.cpu_cores.broker ?? '?'} cores)`,
  );
  row(
    'compute ceiling',
    fmtInt(r.compute_ceiling_rps),
    `predict at batch ${r.compute_best_batch}, ${r.machine.backend}, no Kafka`,
  );
  row(
    'naive worker',
    fmtInt(r.naive_rps),
    `per message, ${fmtInt(r.phases.naive.records)} requests in ${r.phases.naive.seconds} s`,
  );
  row(
    'streamscore (defaults)',
    fmtInt(r.streamscore_rps),
    `batches ≤ ${ss.batch_size_limit ?? '?'}, mean ${ss.mean_batch}; ${ss.replicas} replica(s); nothing in flight ${Math.round(ss.empty_fraction * 100)} % of the time; cpu ${ss.cpu_cores.bench} + broker ${ss.cpu_cores.broker ?? '?'} cores`,
  );
  row(
    'streamscore exactly-once',
    fmtInt(r.streamscore_exactly_once_rps),
    `delivery.mode exactly-once: ${r.exactly_once_cost_pct} % below at-least-once; cpu ${r.phases.streamscore_exactly_once.cpu_cores.bench} + broker ${r.phases.streamscore_exactly_once.cpu_cores.broker ?? '?'} cores`,
  );
  const tracedRow = (title: string, rps: number, what: string, t: StreamscoreThroughput) =>
    row(
      title,
      fmtInt(rps),
      `${what}; cpu ${t.cpu_cores.bench} + broker ${t.cpu_cores.broker ?? '?'} + receiver ${t.cpu_cores.receiver ?? '?'} cores; ${t.spans_dropped ?? '?'} spans dropped`,
    );
  const t = r.tracing;
  if (t) {
    row(
      'tracing 100 %, taking turns',
      `${r.tracing_cost_pct} %`,
      `untraced and traced \`streamscore run\` in turns of ${t.turn_ms} ms (${t.turns} each, ${fmtSessions(t)}): ${fmtInt(t.traced.rps)}/s traced vs ${fmtInt(t.untraced.rps)}/s; by fifths ${t.tracing_cost_pct_by_fifth.join(', ')} %; main thread ${t.traced.main_thread_us_per_request ?? '?'} vs ${t.untraced.main_thread_us_per_request ?? '?'} µs, process ${t.traced.process_us_per_request ?? '?'} vs ${t.untraced.process_us_per_request ?? '?'} µs per request; ${t.spans_dropped} spans dropped`,
    );
  }
  if (r.streamscore_traced_jaeger_rps && r.phases.streamscore_traced_jaeger) {
    tracedRow(
      'streamscore, tracing 100 %, Jaeger',
      r.streamscore_traced_jaeger_rps,
      `spans over OTLP to a local Jaeger v2 on the same cores: ${r.tracing_jaeger_cost_pct} % below untraced`,
      r.phases.streamscore_traced_jaeger,
    );
  }
  row(
    'streamscore / ceiling',
    r.ratio_vs_ceiling.toFixed(2),
    `min(I/O, compute) = ${fmtInt(Math.min(r.io_ceiling_rps, r.compute_ceiling_rps))}/s`,
  );
  row('streamscore / naive', r.ratio_vs_naive.toFixed(1));
  for (const l of r.latency) {
    row(
      `latency at ${l.load_pct} % (${fmtRate(l.offered_rps)}/s)`,
      `p99 ${l.p99_ms} ms`,
      `p50 ${l.p50_ms} ms, p95 ${l.p95_ms} ms, max ${l.max_ms} ms; median to worker ${l.breakdown_p50_ms.to_worker} / batch+infer ${l.breakdown_p50_ms.batch_and_inference} / to reader ${l.breakdown_p50_ms.to_reader} ms; cpu worker ${l.cpu_cores.worker ?? '?'} + bench ${l.cpu_cores.bench} + broker ${l.cpu_cores.broker ?? '?'}`,
    );
  }
  const w = r.latency_worker;
  row(
    'peak RSS (worker process)',
    `${r.peak_rss_mb} MB`,
    `VmHWM of \`streamscore run\` (pid ${w.pid}; started in ${w.startup_seconds} s, batch ${w.batch_size ?? '?'}); SIGTERM → exit ${w.exit_code ?? w.signal} in ${w.stop_seconds} s, drained ${String(w.stopped?.['drained'] ?? '?')}, unanswered ${String(w.stopped?.['unanswered'] ?? '?')}`,
  );
  row(
    'peak RSS (benchmark process)',
    `${r.bench_process_peak_rss_mb} MB`,
    `this process, streamscore phases (the in-process throughput worker included); ${ss.rss_at_start_mb} MB after a GC before it started`,
  );
  if (r.overload) {
    const c = r.overload.cpu_cores;
    row(
      `overload 3× (${fmtRate(r.overload.offered_rps)}/s)`,
      `${r.overload.peak_rss_mb} MB`,
      `worker VmHWM${r.overload.peak_rss_reset ? ' (reset at the start)' : ''}; offered ${fmtRate(r.overload.achieved_offer_rps)}/s for ${r.overload.seconds} s; drained in ${r.overload.drain_seconds} s; cpu worker ${c.worker ?? '?'} + bench ${c.bench} + broker ${c.broker ?? '?'} cores`,
    );
  }
  for (const t of r.targets) {
    row(`target: ${t.what}`, t.met ? '✓ met' : '✗ not met', `${t.actual}; target ${t.target}`);
  }
}

/** Markdown summary, for bench/README.md and the project README. */
function markdownTable(models: Record<string, ModelReport>): string {
  const lines = [
    '| model | I/O ceiling | compute ceiling (batch) | naive | streamscore | ÷ ceiling | ÷ naive | exactly-once (cost) | tracing 100 %, cost (traced vs untraced, taking turns) | tracing 100 % into Jaeger on the same cores (cost) | p50 / p95 / p99 at 50 % load | worker peak RSS |',
    '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
  ];
  for (const r of Object.values(models)) {
    const l = r.latency.find((x) => x.load_pct === 50)!;
    lines.push(
      `| ${r.title} | ${fmtInt(r.io_ceiling_rps)}/s | ${fmtInt(r.compute_ceiling_rps)}/s (${r.compute_best_batch}) | ${fmtInt(r.naive_rps)}/s | **${fmtInt(r.streamscore_rps)}/s** | ${r.ratio_vs_ceiling.toFixed(2)} | ${r.ratio_vs_naive.toFixed(1)} | ${fmtInt(r.streamscore_exactly_once_rps)}/s (${r.exactly_once_cost_pct} %) | ${r.tracing ? `${r.tracing_cost_pct} % (${fmtInt(r.tracing.traced.rps)} vs ${fmtInt(r.tracing.untraced.rps)}/s)` : '—'} | ${r.streamscore_traced_jaeger_rps ? `${fmtInt(r.streamscore_traced_jaeger_rps)}/s (${r.tracing_jaeger_cost_pct} %)` : '—'} | ${l.p50_ms} / ${l.p95_ms} / ${l.p99_ms} ms | ${r.peak_rss_mb} MB |`,
    );
  }
  return lines.join('\n');
}

const escapeXml = (text: string) =>
  text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');

/** Axis labels: 100, 1k, 20k, 1M. */
function fmtTick(v: number): string {
  if (v >= 1e6) return `${v / 1e6}M`;
  if (v >= 1e3) return `${v / 1e3}k`;
  return String(v);
}

/** A grouped bar chart of records/s per model and phase, log scale, as a standalone SVG. */
function renderChart(models: Record<string, ModelReport>, subtitle: string): string {
  const series = [
    { key: 'io_ceiling_rps', label: 'I/O ceiling (kafkajs copy)', color: '#7f8c9a' },
    { key: 'compute_ceiling_rps', label: 'compute ceiling (predict)', color: '#c9a227' },
    { key: 'naive_rps', label: 'naive (per message)', color: '#c0504d' },
    { key: 'streamscore_rps', label: 'streamscore (defaults)', color: '#2e8b57' },
  ] as const;
  const reports = Object.values(models);
  const values = reports.flatMap((r) => series.map((s) => r[s.key])).filter((v) => v > 0);
  const lo = 10 ** Math.floor(Math.log10(Math.min(...values)));
  const hi = 10 ** Math.ceil(Math.log10(Math.max(...values)));
  const W = 960;
  const H = 560;
  const m = { left: 90, right: 24, top: 110, bottom: 96 };
  const plotW = W - m.left - m.right;
  const plotH = H - m.top - m.bottom;
  const y = (v: number) =>
    m.top + plotH * (1 - (Math.log10(v) - Math.log10(lo)) / (Math.log10(hi) - Math.log10(lo)));
  const out: string[] = [];
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="Helvetica, Arial, sans-serif">`,
    `<rect width="${W}" height="${H}" fill="#ffffff"/>`,
    `<text x="${m.left}" y="32" font-size="20" font-weight="bold" fill="#222">streamscore throughput: records/s by phase (log scale)</text>`,
    `<text x="${m.left}" y="54" font-size="12" fill="#555">${escapeXml(subtitle)}</text>`,
  );
  // Legend, one row.
  let lx = m.left;
  for (const s of series) {
    out.push(
      `<rect x="${lx}" y="70" width="14" height="14" fill="${s.color}"/>`,
      `<text x="${lx + 20}" y="82" font-size="12" fill="#333">${escapeXml(s.label)}</text>`,
    );
    lx += 26 + s.label.length * 6.6;
  }
  out.push(
    `<line x1="${lx}" x2="${lx + 18}" y1="77" y2="77" stroke="#1f5f3a" stroke-width="2" stroke-dasharray="5 3"/>`,
    `<text x="${lx + 24}" y="82" font-size="12" fill="#333">target</text>`,
  );
  // Axis with decade lines and 2×/5× minor lines.
  for (let decade = lo; decade <= hi; decade *= 10) {
    for (const k of [1, 2, 5]) {
      const v = decade * k;
      if (v > hi) break;
      const yy = y(v).toFixed(1);
      out.push(
        `<line x1="${m.left}" x2="${W - m.right}" y1="${yy}" y2="${yy}" stroke="${k === 1 ? '#cfcfcf' : '#eeeeee'}" stroke-width="1"/>`,
      );
      if (k === 1 || hi / lo <= 1000) {
        out.push(
          `<text x="${m.left - 8}" y="${(y(v) + 4).toFixed(1)}" font-size="12" text-anchor="end" fill="${k === 1 ? '#333' : '#888'}">${fmtTick(v)}</text>`,
        );
      }
    }
  }
  out.push(
    `<line x1="${m.left}" x2="${m.left}" y1="${m.top}" y2="${m.top + plotH}" stroke="#333"/>`,
    `<line x1="${m.left}" x2="${W - m.right}" y1="${m.top + plotH}" y2="${m.top + plotH}" stroke="#333"/>`,
    `<text transform="translate(22 ${m.top + plotH / 2}) rotate(-90)" font-size="13" text-anchor="middle" fill="#333">records per second</text>`,
  );
  const groupW = plotW / reports.length;
  const barW = Math.min(56, (groupW * 0.78) / series.length);
  Object.entries(models).forEach(([name, r], g) => {
    const x0 = m.left + g * groupW + (groupW - barW * series.length) / 2;
    series.forEach((s, i) => {
      const v = r[s.key];
      const x = x0 + i * barW;
      const top = y(Math.max(v, lo));
      out.push(
        `<rect x="${(x + 2).toFixed(1)}" y="${top.toFixed(1)}" width="${(barW - 4).toFixed(1)}" height="${(m.top + plotH - top).toFixed(1)}" fill="${s.color}"><title>${escapeXml(`${r.title}, ${s.label}: ${fmtInt(v)}/s`)}</title></rect>`,
        `<text x="${(x + barW / 2).toFixed(1)}" y="${(top - 5).toFixed(1)}" font-size="11" text-anchor="middle" fill="#222">${fmtRate(v)}</text>`,
      );
    });
    const cx = (m.left + g * groupW + groupW / 2).toFixed(1);
    out.push(
      `<text x="${cx}" y="${m.top + plotH + 22}" font-size="14" font-weight="bold" text-anchor="middle" fill="#222">${escapeXml(r.title)}</text>`,
      `<text x="${cx}" y="${m.top + plotH + 42}" font-size="12" text-anchor="middle" fill="#444">streamscore: ${r.ratio_vs_ceiling.toFixed(2)} × ceiling, ${r.ratio_vs_naive.toFixed(1)} × naive</text>`,
      `<text x="${cx}" y="${m.top + plotH + 60}" font-size="12" text-anchor="middle" fill="#444">p99 at 50 % load ${r.p99_ms_at_50pct_load} ms, worker RSS ${r.peak_rss_mb} MB</text>`,
    );
    // The throughput target (0.85 × the ceiling it is held to) as a dashed mark over streamscore's bar.
    const target =
      0.85 *
      (name === 'tabular' ? r.io_ceiling_rps : Math.min(r.io_ceiling_rps, r.compute_ceiling_rps));
    const tx = x0 + (series.length - 1) * barW;
    const ty = y(target).toFixed(1);
    out.push(
      `<line x1="${(tx - 4).toFixed(1)}" x2="${(tx + barW + 4).toFixed(1)}" y1="${ty}" y2="${ty}" stroke="#1f5f3a" stroke-width="2" stroke-dasharray="5 3"/>`,
      `<text x="${(tx + barW + 6).toFixed(1)}" y="${(Number(ty) + 4).toFixed(1)}" font-size="10" fill="#1f5f3a">target</text>`,
    );
  });
  out.push('</svg>');
  return out.join('\n') + '\n';
}

function chartSubtitle(report: {
  machine: Machine;
  git: { sha: string; dirty: boolean };
  date: string;
}): string {
  const { machine, git, date } = report;
  return `${machine.cores} cores ${machine.cpu_model}, Node ${machine.node}, tfjs ${machine.backend}; ${git.sha}${git.dirty ? ' (dirty)' : ''}, ${date.slice(0, 10)}`;
}

/** --render: redraw the chart from a results file (after a change to the drawing, say). */
async function renderOnly(file: string, out: string): Promise<void> {
  const report = JSON.parse(readFileSync(path.resolve(file), 'utf8')) as Parameters<
    typeof chartSubtitle
  >[0] & { models: Record<string, ModelReport> };
  await mkdir(out, { recursive: true });
  await writeAtomically(
    path.join(out, 'latest.svg'),
    renderChart(report.models, chartSubtitle(report)),
  );
  say(`• Wrote ${path.relative(ROOT, path.join(out, 'latest.svg'))} from ${file}`);
}

/** The issue's target for tracing at 100 % sampling: at most this much throughput lost. */
const TRACING_TARGET_PCT = 10;

type TargetVerdict = 'met' | 'not met' | 'undecided' | 'too few runs';

/**
 * Met when the whole 95 % interval of the median cost is at or under the target, not met when it
 * is all above, undecided when it straddles it: a median a point under the target, from runs that
 * scatter by ±4 points, does not show that the target is met.
 */
function targetVerdict(interval: MedianInterval | null): TargetVerdict {
  if (!interval) return 'too few runs';
  if (interval.high <= TRACING_TARGET_PCT) return 'met';
  if (interval.low > TRACING_TARGET_PCT) return 'not met';
  return 'undecided';
}

/**
 * `--tracing-only <runs>`: tracing's cost alone, `runs` times per model (each run two sessions of
 * turns, as in the full bench), so that a cost whose runs scatter by several points is read from
 * many runs. Batches of 128 (what autotune chooses for every model here); topics sized by the
 * model's typical untraced rate.
 */
async function tracingOnly(
  bench: Bench,
  runs: number,
  machine: Machine,
  date: string,
  startedAt: number,
): Promise<void> {
  const results: Record<
    string,
    {
      runs: (TracingTurns | SwitchedTracing)[];
      median_cost_pct: number;
      median_interval_95: MedianInterval | null;
      /** Null for --calibrate, whose expected cost is 0. */
      target: { max_cost_pct: number; verdict: TargetVerdict } | null;
      /** --calibrate: whether the interval of the median holds 0 (no bias shown). */
      calibration?: { interval_holds_zero: boolean | null };
    }
  > = {};
  const { calibrate, switched } = bench.options;
  for (const name of bench.options.models) {
    const spec = BENCH_MODELS[name];
    say(
      `\n■ ${spec.title}: ${calibrate ? 'the method alone (A/A: both untraced)' : "tracing's cost"}, ${runs} run(s)`,
    );
    const done: (TracingTurns | SwitchedTracing)[] = [];
    const topic = switched ? await switchedTopic(bench, spec) : undefined;
    for (let run = 1; run <= runs; run++) {
      say(`  run ${run} of ${runs}`);
      if (switched) {
        const result = await tracingSwitched(bench, spec, topic!, 128);
        saySwitched(result, calibrate);
        done.push(result);
      } else {
        const turns = await tracingTurns(bench, spec, spec.typicalRps, 128);
        sayTurns(turns);
        done.push(turns);
      }
    }
    const costs = done.map((t) => t.tracing_cost_pct).sort((x, y) => x - y);
    const middle = round(median(costs), 1);
    const interval = medianInterval(costs);
    const holdsZero = interval && interval.low <= 0 && interval.high >= 0;
    const verdict = calibrate ? null : targetVerdict(interval);
    results[name] = {
      runs: done,
      median_cost_pct: middle,
      median_interval_95: interval && { ...interval, confidence: round(interval.confidence, 3) },
      target: verdict && { max_cost_pct: TRACING_TARGET_PCT, verdict },
      ...(calibrate ? { calibration: { interval_holds_zero: holdsZero } } : {}),
    };
    const judged =
      verdict ?? (holdsZero ? 'holds 0: no bias shown' : 'does not hold 0: one side is favoured');
    say(
      `  ${spec.title}: ${costs.join(', ')} %; median ${middle} %` +
        (interval
          ? `, 95 % interval ${interval.low}–${interval.high} %: ${judged}`
          : ' (fewer than 6 runs: no 95 % interval, no verdict)'),
    );
  }
  machine.load_average.end = round(os.loadavg()[0]!, 2);
  const header = runHeader(date, startedAt, machine);
  const report = {
    ...header,
    method: switched
      ? `one \`streamscore run\` (128 per batch; tracing on at 100 %, every span exported over OTLP/HTTP to a receiver that discards them) reads a pre-produced topic while its tracing is paused and resumed (POST /tracing/pause, /tracing/resume) in the order on, off, off, on, …; after each switch, once the requests in flight at the switch are answered and ${SWITCHED_SETTLE_MARGIN_MS} ms more have passed, ${SWITCHED_MEASURE_MS} ms are measured; the rate of each mode is its answered requests over its measured time`
      : 'an untraced and a traced `streamscore run` (128 per batch; the traced one exports every span over OTLP/HTTP to a receiver that discards them) read one pre-produced topic, each in its own group, taking turns of 500 ms (SIGSTOP/SIGCONT); the rate of each side is its answered requests over its own running time; two sessions per run, each starting the workers the other way round',
    ...(calibrate
      ? {
          calibration: switched
            ? 'A/A: every switch pauses tracing, so both modes run untraced and the cost measures the method'
            : 'A/A: the "traced" worker has the OTLP endpoint but telemetry.tracesSampleRatio 0, which turns tracing off; both workers do the same work, so the cost measures the method',
        }
      : {}),
    models: results,
  };
  await mkdir(bench.options.out, { recursive: true });
  const kind = `tracing-${switched ? 'switched' : 'turns'}${calibrate ? '-calibration' : ''}`;
  const stem = `${kind}-${resultStem(date, header.git.sha)}`;
  const json = JSON.stringify(report, null, 2) + '\n';
  await writeAtomically(path.join(bench.options.out, `${stem}.json`), json);
  await writeAtomically(path.join(bench.options.out, `${kind}-latest.json`), json);
  say(`\n• Wrote ${path.relative(ROOT, path.join(bench.options.out, `${stem}.json`))}`);
}

/** What every results file starts with: when, which build, how it was run, on what. */
function runHeader(date: string, startedAt: number, machine: Machine) {
  return {
    date,
    git: {
      sha: git(['rev-parse', '--short', 'HEAD']) ?? 'nogit',
      dirty: (git(['status', '--porcelain']) ?? '') !== '',
    },
    command: `npx tsx bench/run.ts ${process.argv.slice(2).join(' ')}`.trim(),
    machine,
    duration_s: round((now() - startedAt) / 1000, 1),
  };
}

/** `<date>-<sha>`, as results files are named. */
const resultStem = (date: string, sha: string): string =>
  `${date.replace(/:/g, '-').replace(/\.\d+Z$/, 'Z')}-${sha}`;

async function writeAtomically(file: string, text: string): Promise<void> {
  const tmp = `${file}.${process.pid}.tmp`;
  await writeFile(tmp, text);
  await rename(tmp, file);
}

function git(args: string[]): string | null {
  try {
    return execFileSync('git', args, {
      cwd: ROOT,
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'ignore'],
    }).trim();
  } catch {
    return null;
  }
}

// ─── main ───────────────────────────────────────────────────────────────────────────────────────

async function main(): Promise<void> {
  const options = parseOptions(process.argv);
  if (options.render !== undefined) return renderOnly(options.render, options.out);
  const startedAt = now();
  const loadAtStart = round(os.loadavg()[0]!, 2);
  const date = new Date().toISOString();
  const rss = new RssSampler(50);
  const externalBrokers = process.env['STREAMSCORE_KAFKA_BROKERS']
    ?.split(',')
    .map((b) => b.trim())
    .filter(Boolean);

  // Models first: a wrong model definition should fail before a broker is started.
  const { tf } = await selectBackend('wasm', silentLogger);
  const built = await ensureBenchModels(tf, options.models);
  say(
    `• Benchmark models in ${path.relative(ROOT, BENCH_REPOSITORY)}: ${options.models.join(', ')}${built.length > 0 ? ` (built ${built.join(', ')})` : ''}`,
  );

  let broker: LocalBroker | undefined;
  let jaeger: LocalJaeger | undefined;
  let otlpSink: Bench['otlpSink'] | undefined;
  const bench: Partial<Bench> = {};
  const cleanup = async () => {
    if (bench.kafka && !broker && bench.topics && bench.topics.length > 0) {
      // Our topics on someone else's broker; a local one is thrown away with its data.
      const admin = bench.kafka.admin();
      await admin
        .connect()
        .then(() => admin.deleteTopics({ topics: bench.topics! }))
        .catch((err: unknown) => say(`  could not delete the benchmark topics: ${String(err)}`))
        .finally(() => admin.disconnect());
    }
    await jaeger?.stop();
    otlpSink?.stop();
    await broker?.stop();
    rss.stop();
  };
  process.once('SIGINT', () => void cleanup().finally(() => process.exit(130)));

  try {
    let brokers: string[];
    let kafkaNote: string;
    if (externalBrokers && externalBrokers.length > 0) {
      brokers = externalBrokers;
      kafkaNote = `external (${brokers.join(',')})`;
      say(`• Kafka: ${brokers.join(',')} (STREAMSCORE_KAFKA_BROKERS)`);
    } else {
      say('• No STREAMSCORE_KAFKA_BROKERS: starting a local Kafka broker…');
      const t0 = now();
      broker = await startLocalBroker();
      brokers = broker.brokers;
      kafkaNote =
        'local Apache Kafka 4.3.1, one KRaft node on loopback, 512 MiB heap, same machine';
      say(`  up at ${brokers.join(',')} after ${((now() - t0) / 1000).toFixed(1)} s`);
    }
    const kafkaConfig = loadConfig({
      env: {},
      overrides: { kafka: { brokers, clientId: 'streamscore-bench' } },
    }).kafka;
    otlpSink = await startDiscardingReceiver();
    // --tracing-only has no Jaeger phase: the traced worker exports to the discarding receiver.
    if (options.tracingOnly === undefined) {
      try {
        jaeger = await startLocalJaeger();
        say(`• Jaeger v2 for a traced phase: OTLP at ${jaeger.otlpHttpEndpoint}`);
      } catch (err) {
        say(
          `• No Jaeger (${(err as Error).message.split('\n')[0]}); the Jaeger phase is skipped. \`npm run jaeger -- fetch\` builds it.`,
        );
      }
    }
    Object.assign(bench, {
      kafka: createKafka(kafkaConfig, silentLogger),
      brokers,
      broker,
      jaeger,
      otlpSink,
      runId: Date.now().toString(36),
      options,
      rss,
      topics: [],
      groupSeq: 0,
    } satisfies Bench);
    const b = bench as Bench;

    const cpus = os.cpus();
    const machine: Machine = {
      cores: cpus.length,
      cpu_model: cpus[0]?.model.trim() ?? 'unknown',
      node: process.version,
      backend: 'wasm',
      platform: `${os.type()} ${os.release()} ${os.arch()}`,
      memory_gb: round(os.totalmem() / GiB, 1),
      kafka: kafkaNote,
      load_average: { start: loadAtStart, end: null },
    };
    say(
      `• ${machine.cores} cores (${machine.cpu_model}), Node ${machine.node}; throughput: the worker in this process; latency and overload: \`streamscore run\` in its own process`,
    );
    if (loadAtStart > 1) {
      say(
        `  note: load average ${loadAtStart} before the run: other processes use the CPU, so figures will be lower and noisier`,
      );
    }

    if (options.tracingOnly !== undefined) {
      await tracingOnly(b, options.tracingOnly, machine, date, startedAt);
      return;
    }

    const models: Record<string, ModelReport> = {};
    for (const name of options.models) {
      models[name] = await benchModel(b, name, machine);
      printTable(models[name]);
    }
    machine.backend = Object.values(models)[0]?.machine.backend ?? machine.backend;
    machine.load_average.end = round(os.loadavg()[0]!, 2);

    const header = runHeader(date, startedAt, machine);
    const seconds = header.duration_s;
    const report = {
      ...header,
      process_max_rss_mb: round(process.resourceUsage().maxRSS / 1024),
      method: {
        process:
          'the ceilings, the naive worker and the streamscore throughput phase (startService) run in the benchmark process; the latency loads and the overload run `streamscore run` as its own Node process (tsx, STREAMSCORE_* variables), stopped with SIGTERM; the broker is a separate JVM',
        throughput:
          'records / (last acknowledged produce − first record handed to the consumer); group joins, model load and warm-up are not counted. streamscore: from the earliest receivedAt in its results to its acknowledged-results counter reaching N (polled every 2 ms)',
        io_ceiling: `kafkajs consumer group, eachBatch, partitionsConsumedConcurrently ${PARTITIONS}; sendBatch of the same key/value/headers, ≤ 512 KiB per request, idempotent producer, acks -1, maxInFlightRequests 1 (as the worker's sink)`,
        compute_ceiling:
          'runner.predict (tensor from a packed Float32Array → model.predict → data()) on prepared batches; each power of two 1..256 probed briefly, the best one measured again',
        naive:
          'kafkajs eachMessage: Avro decode → predict(batch of 1) → Avro encode → producer.send awaited (acks -1), one message at a time; stops after its time budget',
        streamscore:
          'startService with the default configuration; only brokers, group, topics and model set',
        latency:
          '`streamscore run` in its own process on an empty topic; a paced producer in the benchmark process (every 5 ms, requestedAt = send time) offers 25/50/75 % of the measured streamscore rate; latency = result read time (reader in the benchmark process) − requestedAt, one machine, one clock',
        peak_rss:
          'peak_rss_mb: VmHWM of the `streamscore run` process (/proc/<pid>/status) over the latency loads and the overload; bench_process_peak_rss_mb: the benchmark process, sampled every 50 ms, in-process throughput worker included',
        overload:
          '3× the saturation rate for --overload-seconds into the `streamscore run` process; VmHWM reset (clear_refs 5) at its start, VmRSS every second; drain = last offered request until the reader has all its results',
      },
      models,
    };
    await mkdir(options.out, { recursive: true });
    const stem = resultStem(date, header.git.sha);
    const json = JSON.stringify(report, null, 2) + '\n';
    const svg = renderChart(models, chartSubtitle(report));
    await writeAtomically(path.join(options.out, `${stem}.json`), json);
    await writeAtomically(path.join(options.out, 'latest.json'), json);
    await writeAtomically(path.join(options.out, 'latest.svg'), svg);

    say('\nSummary (markdown):\n');
    say(markdownTable(models));
    say(
      `\n• Wrote ${path.relative(ROOT, path.join(options.out, `${stem}.json`))}, latest.json and latest.svg in ${path.relative(ROOT, options.out)}/ (${seconds.toFixed(0)} s in all)`,
    );
  } finally {
    await cleanup();
  }
}

main().then(
  () => process.exit(0), // kafkajs and tfjs may leave handles open; everything was stopped
  (err: unknown) => {
    process.stderr.write(
      `bench failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`,
    );
    process.exit(1);
  },
);
