/**
 * `npm run bench:tracing`: what tracing costs per request, by sampling ratio, side by side in one
 * process run: on the worker's main thread (what its throughput pays) and on the tracing thread
 * (which makes, serialises and exports the spans).
 *
 * Each round drives the same requests (no traceparent, so the ratio decides) through the worker's
 * RequestTracing exactly as the worker calls it (received → identified → batch → sending →
 * answered, batches of 128), with the production set-up (`startTracing`: the tracing thread,
 * BatchSpanProcessor, OTLP/HTTP export with streamscore's protobuf serializer) exporting to a
 * receiver in a child process that reads and discards the bodies, so the receiver's CPU is not
 * counted. "off" runs the same loop with no tracing (what the worker does without
 * `telemetry.otlpEndpoint`). Each round's new tracing thread first takes 20,000 requests unmeasured
 * (its JIT warm-up, which a worker pays once; its CPU is reported apart). Rounds alternate the
 * ratios; the median per ratio is reported. `--in-flight 128,16384` drives the requests with that
 * many read and not yet answered, side by side (the worker holds up to `batching.maxQueued`); one
 * batch (128) by default, as before. The full bench (`npm run bench`) measures the throughput
 * cost at 100 % end to end.
 *
 * Writes bench/results/tracing-<date>-<sha>.json and tracing-latest.json.
 */
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setImmediate as yieldToLoop } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { MeterProvider, MetricReader } from '@opentelemetry/sdk-metrics';
import { Command, InvalidArgumentError } from 'commander';
import { loadConfig } from '../src/config/index.js';
import type { InboundRecord, OutboundRecord } from '../src/kafka/types.js';
import { silentLogger } from '../src/telemetry/logger.js';
import { startTracing, type TracingHandle } from '../src/telemetry/tracing.js';
import { startDiscardingReceiver } from './otlp-sink.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const BATCH = 128;

interface Options {
  requests: number;
  rounds: number;
  ratios: number[];
  threadWarmUp: number;
  inFlight: number[];
  paused: boolean;
}

/** Reads the trace SDK's own counters when asked (nothing periodic). */
class OnDemandReader extends MetricReader {
  protected async onForceFlush(): Promise<void> {}
  protected async onShutdown(): Promise<void> {}

  /** Spans the batch processor dropped because its queue was full. */
  async droppedSpans(): Promise<number> {
    const { resourceMetrics } = await this.collect();
    let dropped = 0;
    for (const scope of resourceMetrics.scopeMetrics)
      for (const metric of scope.metrics)
        if (metric.descriptor.name === 'otel.sdk.processor.span.processed')
          for (const point of metric.dataPoints)
            if (point.attributes['error.type'] === 'queue_full') dropped += point.value as number;
    return dropped;
  }
}

interface RatioResult {
  ratio: number | 'off' | 'paused';
  /** Requests read and not yet answered while they are driven (rows of the in-flight table). */
  in_flight: number;
  /** Main-thread time per request above the loop alone (for 'off': the loop alone). */
  us_per_request: number;
  rounds_us: number[];
  /** Time the tracing thread was busy per request (making, serialising, exporting spans). */
  thread_us_per_request: number;
  /**
   * Time the process's other threads were busy per request, above the loop alone: V8's helper
   * threads (parallel scavenges and concurrent marking of both threads' heaps, compilers), which
   * run at the process's priority whatever the tracing thread's nice value.
   */
  helper_us_per_request: number;
  /**
   * CPU ms (tracing thread and helpers) a new tracing thread took for its first requests (the
   * warm-up, `--thread-warm-up`), not counted above: once per worker process.
   */
  thread_warm_up_ms: number;
  exported_bytes_per_request: number;
  /** Spans dropped on a full export queue, over all rounds: a cost hidden by not exporting. */
  dropped_spans: number;
}

/** The requests' ids (made here: the worker has them decoded before tracing sees them). */
const requestIds: string[] = [];

function makeRequests(n: number): InboundRecord[] {
  const now = Date.now();
  for (let i = requestIds.length; i < n; i++) requestIds.push(`req-${i}`);
  return Array.from({ length: n }, (_, i) => ({
    topic: 'requests',
    partition: i % 4,
    offset: String(i),
    key: null,
    value: Buffer.alloc(0),
    headers: {},
    timestamp: now,
  }));
}

/**
 * CPU time of each of this process's threads so far, in ms, from Linux's per-thread scheduler
 * statistics (nanoseconds on the CPU): the main thread's is what the worker's throughput pays;
 * the tracing thread's is paid on another core.
 */
function threadCpuMs(): Map<number, number> {
  const cpu = new Map<number, number>();
  for (const tid of readdirSync('/proc/self/task')) {
    try {
      const ns = Number(readFileSync(`/proc/self/task/${tid}/schedstat`, 'utf8').split(' ')[0]);
      cpu.set(Number(tid), ns / 1e6);
    } catch {
      // the thread ended meanwhile
    }
  }
  return cpu;
}

const cpuOf = (cpu: Map<number, number>, tids: Iterable<number>): number => {
  let ms = 0;
  for (const tid of tids) ms += cpu.get(tid) ?? 0;
  return ms;
};

/** Requests driven between waits for the tracing thread: at most this many spans in flight. */
const PACE = 2048;

/**
 * One pass of every request through the worker's tracing calls, as the worker makes them. With
 * `inFlight` above one batch, batches are read that many requests ahead of the one scored and
 * answered, as a worker holds thousands read and unanswered (up to `batching.maxQueued`): each
 * request's row in the in-flight table is then written and read again with the others' in
 * between, not while it is still in the CPU's caches.
 */
async function drive(
  tracing: TracingHandle | undefined,
  requests: InboundRecord[],
  inFlight: number,
): Promise<void> {
  const t = tracing?.requests;
  const ahead = Math.max(0, Math.ceil(inFlight / BATCH) - 1);
  const read: { batch: InboundRecord[]; receivedAt: number[] }[] = [];
  let answered = 0;
  const answerOldest = async (): Promise<void> => {
    const oldest = read.shift()!;
    scoreAndAnswer(t, oldest.batch, oldest.receivedAt);
    answered += oldest.batch.length;
    // This loop outruns any worker: waiting (off the CPU) for the thread to catch up keeps
    // it from dropping spans, whose making would then go unmeasured.
    if (tracing && answered % PACE === 0) await tracing.flush();
  };
  for (let b = 0; b < requests.length; b += BATCH) {
    const batch = requests.slice(b, b + BATCH);
    const receivedAt = batch.map(() => performance.now());
    // As the worker: one clock reading for the records of a fetch, and one for the answers
    // acknowledged together.
    const readAt = t?.readAt();
    for (const [i, record] of batch.entries()) {
      t?.received(record, readAt);
      t?.identified(record, requestIds[b + i]!);
    }
    read.push({ batch, receivedAt });
    if (read.length > ahead) await answerOldest();
    // The worker awaits between batches too: timers (the hand-over) get their turn.
    await yieldToLoop();
  }
  while (read.length > 0) {
    await answerOldest();
    await yieldToLoop();
  }
}

/** A batch's model call, its answers handed to the producer and their acknowledgement. */
function scoreAndAnswer(
  t: TracingHandle['requests'] | undefined,
  batch: InboundRecord[],
  receivedAt: number[],
): void {
  const model = { name: 'bench', version: '1', backend: 'wasm' };
  const inferred = t?.batch(batch, model, performance.now(), receivedAt);
  inferred?.(performance.now());
  const outs: OutboundRecord[] = batch.map((r) => ({
    topic: 'results',
    key: r.key,
    value: Buffer.alloc(0),
    headers: {},
  }));
  t?.sending(batch, outs, 'results');
  const answeredAt = t?.now();
  for (const record of batch) t?.answered(record, 'result', '', answeredAt);
}

/** The threads that were there before tracing started, but the main thread: V8's helpers. */
const helpers = (cpu: Map<number, number>, existing: Set<number>): number[] =>
  [...existing].filter((tid) => tid !== process.pid && cpu.has(tid));

/**
 * µs of CPU per request on the main thread, on the threads tracing started, and on the helper
 * threads that were already there.
 */
async function measure(
  ratio: number | 'off' | 'paused',
  requests: InboundRecord[],
  receiver: { url: string; bytes(): Promise<number> },
  warmUp: number,
  inFlight: number,
): Promise<{
  us: number;
  threadUs: number;
  helperUs: number;
  warmUpMs: number;
  bytes: number;
  dropped: number;
}> {
  const perRequest = (ms: number): number => (ms * 1000) / requests.length;
  if (ratio === 'off') {
    const before = threadCpuMs();
    const others = helpers(before, new Set(before.keys()));
    await drive(undefined, requests, inFlight);
    const after = threadCpuMs();
    return {
      us: perRequest(after.get(process.pid)! - before.get(process.pid)!),
      threadUs: 0,
      helperUs: perRequest(cpuOf(after, others) - cpuOf(before, others)),
      warmUpMs: 0,
      bytes: 0,
      dropped: 0,
    };
  }
  const reader = new OnDemandReader();
  const meterProvider = new MeterProvider({ readers: [reader] });
  const config = loadConfig({ env: {} }).telemetry;
  const existing = new Set(threadCpuMs().keys());
  const handle = startTracing(
    { ...config, otlpEndpoint: receiver.url, tracesSampleRatio: ratio === 'paused' ? 1 : ratio },
    silentLogger,
    { version: '0', groupId: 'bench', meterProvider },
  )!;
  // Tracing on, then paused at run time (POST /tracing/pause): what an untraced stretch of
  // `npm run bench -- --tracing-only <runs> --switched` costs beyond tracing off.
  if (ratio === 'paused') handle.requests.pause();
  // The thread is up and has loaded the SDK once it answers.
  await handle.flush();
  const fresh = threadCpuMs();
  const started = [...fresh.keys()].filter((tid) => !existing.has(tid));
  const others = helpers(fresh, existing);
  // A worker's tracing thread lives as long as the worker: its JIT warm-up (compiling on V8's
  // helper threads, running cold code meanwhile) is paid once, not per request. Each round's
  // new thread takes some requests first, reported apart.
  await drive(handle, requests.slice(0, warmUp), inFlight);
  await handle.flush();
  const bytesBefore = await receiver.bytes();
  const before = threadCpuMs();
  const warmUpMs =
    cpuOf(before, started) - cpuOf(fresh, started) + cpuOf(before, others) - cpuOf(fresh, others);
  await drive(handle, requests, inFlight);
  // Making and exporting what the thread still holds is part of its cost.
  await handle.flush();
  const after = threadCpuMs();
  const bytes = (await receiver.bytes()) - bytesBefore;
  const dropped = await reader.droppedSpans();
  await handle.shutdown();
  await meterProvider.shutdown();
  return {
    us: perRequest(after.get(process.pid)! - before.get(process.pid)!),
    threadUs: perRequest(cpuOf(after, started) - cpuOf(before, started)),
    helperUs: perRequest(cpuOf(after, others) - cpuOf(before, others)),
    warmUpMs,
    bytes,
    dropped,
  };
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
};

/** A ratio (or tracing off, or on and paused) at a number of requests in flight. */
interface Config {
  ratio: number | 'off' | 'paused';
  inFlight: number;
}

function parseInFlight(value: string): number[] {
  return value.split(',').map((v) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < BATCH) {
      throw new InvalidArgumentError(`in flight: whole numbers of at least ${BATCH}; got "${v}"`);
    }
    return n;
  });
}

function parseRatios(value: string): number[] {
  return value.split(',').map((v) => {
    const r = Number(v);
    if (!(r > 0 && r <= 1)) throw new InvalidArgumentError(`ratios are in (0, 1]: got "${v}"`);
    return r;
  });
}

async function main(): Promise<void> {
  const opts = new Command('bench:tracing')
    .description('per-request cost of tracing on the main thread, by sampling ratio')
    .option('--requests <n>', 'requests per round', (v) => Number.parseInt(v, 10), 100_000)
    .option(
      '--rounds <n>',
      'rounds (ratios alternate within each)',
      (v) => Number.parseInt(v, 10),
      5,
    )
    .option('--ratios <list>', 'sampling ratios', parseRatios, [0.01, 0.1, 0.5, 1])
    .option(
      '--paused',
      'also tracing on and paused at run time (POST /tracing/pause), as the untraced stretches of bench --switched run',
      false,
    )
    .option(
      '--thread-warm-up <n>',
      'requests each new tracing thread takes before it is measured (its JIT warm-up)',
      (v) => Number.parseInt(v, 10),
      20_000,
    )
    .option(
      '--in-flight <list>',
      'requests read and not yet answered while driven (the worker holds up to batching.maxQueued, 16,384 by default); each value is run side by side',
      parseInFlight,
      [BATCH],
    )
    .parse()
    .opts<Options>();

  const receiver = await startDiscardingReceiver();
  const requests = makeRequests(opts.requests);
  const configs: Config[] = opts.inFlight.flatMap((inFlight) =>
    (['off', ...(opts.paused ? (['paused'] as const) : []), ...opts.ratios] as const).map(
      (ratio) => ({ ratio, inFlight }),
    ),
  );
  const rounds = new Map<Config, number[]>(configs.map((c) => [c, []]));
  const bytes = new Map<Config, number>(configs.map((c) => [c, 0]));
  const dropped = new Map<Config, number>(configs.map((c) => [c, 0]));
  const threadRounds = new Map<Config, number[]>(configs.map((c) => [c, []]));
  const helperRounds = new Map<Config, number[]>(configs.map((c) => [c, []]));
  const warmUpRounds = new Map<Config, number[]>(configs.map((c) => [c, []]));
  // One warm-up pass each so the JIT has seen every path before anything is timed.
  for (const c of configs) {
    await measure(c.ratio, requests.slice(0, 10_000), receiver, 0, c.inFlight);
  }
  for (let round = 0; round < opts.rounds; round++) {
    for (const c of configs) {
      const result = await measure(c.ratio, requests, receiver, opts.threadWarmUp, c.inFlight);
      dropped.set(c, dropped.get(c)! + result.dropped);
      bytes.set(c, bytes.get(c)! + result.bytes);
      rounds.get(c)!.push(result.us);
      threadRounds.get(c)!.push(result.threadUs);
      helperRounds.get(c)!.push(result.helperUs);
      warmUpRounds.get(c)!.push(result.warmUpMs);
    }
  }
  receiver.stop();

  // Each ratio against the loop alone at the same number in flight.
  const offOf = (c: Config) => configs.find((o) => o.ratio === 'off' && o.inFlight === c.inFlight)!;
  const results: RatioResult[] = configs.map((c) => ({
    ratio: c.ratio,
    in_flight: c.inFlight,
    us_per_request:
      Math.round(
        (median(rounds.get(c)!) - (c.ratio === 'off' ? 0 : median(rounds.get(offOf(c))!))) * 100,
      ) / 100,
    rounds_us: rounds.get(c)!.map((us) => Math.round(us * 100) / 100),
    thread_us_per_request: Math.round(median(threadRounds.get(c)!) * 100) / 100,
    helper_us_per_request:
      Math.round(
        (median(helperRounds.get(c)!) -
          (c.ratio === 'off' ? 0 : median(helperRounds.get(offOf(c))!))) *
          100,
      ) / 100,
    thread_warm_up_ms: Math.round(median(warmUpRounds.get(c)!)),
    exported_bytes_per_request: Math.round(bytes.get(c)! / (opts.rounds * opts.requests)),
    dropped_spans: dropped.get(c)!,
  }));

  // What that cost means at the throughput the full bench measured, if it has run.
  let rps: Record<string, number> = {};
  try {
    const latest = JSON.parse(
      readFileSync(path.join(root, 'bench/results/latest.json'), 'utf8'),
    ) as { models: Record<string, { streamscore_rps: number }> };
    rps = Object.fromEntries(
      Object.entries(latest.models).map(([model, m]) => [model, m.streamscore_rps]),
    );
  } catch {
    // no full bench yet: the share-of-a-core columns are left out
  }
  const header = [
    'in flight',
    'ratio',
    'main thread µs per request',
    'tracing thread µs per request',
    'V8 helper threads µs per request',
    `new thread's first ${opts.threadWarmUp} requests, ms (not counted)`,
    'bytes exported per request',
    'spans dropped',
    ...Object.keys(rps).map((m) => `main thread share at ${m}'s ${rps[m]}/s`),
  ];
  console.log(`\n| ${header.join(' | ')} |\n|${header.map(() => ' ---: ').join('|')}|`);
  for (const r of results) {
    // The event loop's share: what the worker's throughput pays.
    const shares = Object.values(rps).map((x) =>
      r.ratio === 'off' ? '—' : `${((r.us_per_request * x) / 1e4).toFixed(1)} %`,
    );
    console.log(
      `| ${r.in_flight} | ${r.ratio === 'off' ? 'off (loop only)' : r.ratio === 'paused' ? 'paused' : `${r.ratio * 100} %`} | ${r.ratio === 'off' ? `${r.us_per_request.toFixed(2)} (loop)` : r.us_per_request.toFixed(2)} | ${r.ratio === 'off' ? '—' : r.thread_us_per_request.toFixed(2)} | ${r.ratio === 'off' ? `${r.helper_us_per_request.toFixed(2)} (loop)` : r.helper_us_per_request.toFixed(2)} | ${r.ratio === 'off' ? '—' : r.thread_warm_up_ms} | ${r.exported_bytes_per_request} | ${r.dropped_spans} | ${shares.join(' | ')} |`,
    );
  }

  const commit = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: root })
    .toString()
    .trim();
  const out = {
    kind: 'streamscore-tracing-cost',
    commit,
    date: new Date().toISOString(),
    machine: { cpus: os.cpus().length, cpu: os.cpus()[0]?.model, node: process.version },
    requests_per_round: opts.requests,
    thread_warm_up_requests: opts.threadWarmUp,
    rounds: opts.rounds,
    batch: BATCH,
    results,
  };
  const dir = path.join(root, 'bench/results');
  const stamp = out.date.replace(/:/g, '-').replace(/\.\d+Z$/, 'Z');
  writeFileSync(
    path.join(dir, `tracing-${stamp}-${commit}.json`),
    `${JSON.stringify(out, null, 2)}\n`,
  );
  writeFileSync(path.join(dir, 'tracing-latest.json'), `${JSON.stringify(out, null, 2)}\n`);
  console.log(`\nwrote bench/results/tracing-latest.json`);
}

await main();
