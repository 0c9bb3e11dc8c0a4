/**
 * The body of the tracing thread (a worker_threads Worker started by tracing.ts): it makes the
 * OpenTelemetry spans from the records the main thread sends (span-builder.ts) and exports them
 * with the SDK's BatchSpanProcessor and OTLP/HTTP export path, protobuf written by
 * otlp/trace-serializer.ts, so neither span objects nor their serialisation cost the event loop
 * that reads and answers Kafka.
 *
 * It reports back how many spans it made (the main thread bounds what is in flight) and, each
 * second, the processor's own metrics (spans exported, failed, dropped; its queue), which the
 * main thread serves at /metrics under the SDK's names.
 */
import { readlinkSync } from 'node:fs';
import { setPriority } from 'node:os';
import { parentPort, workerData } from 'node:worker_threads';
import type { Attributes } from '@opentelemetry/api';
import type { Resource } from '@opentelemetry/resources';
import { MeterProvider, MetricReader } from '@opentelemetry/sdk-metrics';
import { BatchSpanProcessor, type ReadableSpan } from '@opentelemetry/sdk-trace';
import { TraceExporter } from './otlp/trace-exporter.js';
import { TraceSerializer } from './otlp/trace-serializer.js';
import { telemetryResource } from './resource.js';
import { SpanBuilder } from './span-builder.js';
import {
  GROUP_ID_WORDS,
  ID,
  ID_WORDS,
  SpanRecordWriter,
  type SpanRecords,
} from './span-records.js';
import { SPAN_ID_WORDS, TRACE_ID_WORDS, wordsToHex } from './trace-ids.js';

export interface TraceThreadData {
  /** OTLP/HTTP traces URL (…/v1/traces). */
  url: string;
  serviceName: string;
  version: string;
  groupId: string;
  /** The processor's queue (telemetry.traceQueueSize). */
  queueSize: number;
  /** This thread's nice value (telemetry.traceThreadNice); 0 leaves it as the process's. */
  nice: number;
}

export type ToTraceThread =
  | { type: 'spans'; records: SpanRecords }
  | { type: 'flush'; id: number }
  | { type: 'shutdown' };

/** One data point of the span processor's own metrics. */
export interface ProcessorMetricPoint {
  name: string;
  attributes: Attributes;
  value: number;
}

export type FromTraceThread =
  | { type: 'ready' }
  | { type: 'built'; spans: number }
  | { type: 'stats'; points: ProcessorMetricPoint[] }
  | { type: 'flushed'; id: number }
  | { type: 'closed' };

/** Collects the processor's metrics when asked (nothing periodic of its own). */
class OnDemandReader extends MetricReader {
  protected async onForceFlush(): Promise<void> {}
  protected async onShutdown(): Promise<void> {}

  async points(): Promise<ProcessorMetricPoint[]> {
    const { resourceMetrics } = await this.collect();
    return resourceMetrics.scopeMetrics.flatMap((scope) =>
      scope.metrics.flatMap((metric) =>
        metric.dataPoints.map((point) => ({
          name: metric.descriptor.name,
          attributes: point.attributes,
          value: point.value as number,
        })),
      ),
    );
  }
}

const STATS_INTERVAL_MS = 1000;
/** Synthetic spans made and serialised at start (rounds × spans, in batches as the worker's). */
const WARM_UP_ROUNDS = 10;
const WARM_UP_SPANS = 2048;
const WARM_UP_BATCH = 128;

/** Ids of `words` words, different for each `seed` (never all zero). */
function warmUpIds(seed: number, words: number): Int32Array {
  return Int32Array.from({ length: words }, (_, k) => (seed * 2654435761 + k + 1) | 0);
}

/**
 * Makes and serialises spans like the worker's (requests with and without a producer parent,
 * integral and fractional waits, `infer` and `send` spans linked to each batch), exporting
 * nothing, so that V8 has compiled the thread's hot code before the first real spans come.
 * Without it a new thread's first ~20,000 requests cost ~0.2 s of CPU more (`npm run
 * bench:tracing` reports it), taken from the core the broker and the worker's other threads
 * share, while the worker catches up on what it reads first. Like the model's warm-up, this runs
 * before the worker reads records.
 */
function warmUp(groupId: string, resource: Resource): void {
  const made: ReadableSpan[] = [];
  const builder = new SpanBuilder({
    resource,
    groupId,
    spanProcessors: [
      {
        onStart: () => undefined,
        onEnd: (span) => void made.push(span),
        forceFlush: async () => undefined,
        shutdown: async () => undefined,
      },
    ],
  });
  const serializer = new TraceSerializer();
  const start = Date.now();
  for (let round = 0; round < WARM_UP_ROUNDS; round++) {
    const writer = new SpanRecordWriter(WARM_UP_SPANS);
    for (let b = 0; b < WARM_UP_SPANS; b += WARM_UP_BATCH) {
      const links = new Int32Array(WARM_UP_BATCH * GROUP_ID_WORDS);
      for (let i = b; i < b + WARM_UP_BATCH; i++) {
        const ids = warmUpIds(i, ID_WORDS);
        if (i % 2) ids.fill(0, ID.parent, ID.parent + SPAN_ID_WORDS);
        links.set(ids.subarray(0, GROUP_ID_WORDS), (i - b) * GROUP_ID_WORDS);
        writer.add({
          topic: 'warm-up',
          partition: b % 4,
          offset: i,
          traceId: wordsToHex(ids, ID.trace, TRACE_ID_WORDS),
          spanId: wordsToHex(ids, ID.span, SPAN_ID_WORDS),
          parentSpanId: i % 2 ? '' : wordsToHex(ids, ID.parent, SPAN_ID_WORDS),
          traceState: '',
          start: start + i,
          end: start + i + 4.5,
          queueWaitMs: i % 3,
          batchWaitMs: 1.25,
          inferenceMs: 0.5,
          requestId: `warm-up-${i}`,
          batchSpanId: wordsToHex(ids, ID.batch, SPAN_ID_WORDS),
          outcome: 'result',
          errorCode: '',
          abandonReason: '',
        });
      }
      for (const kind of ['infer', 'send'] as const) {
        writer.addGroup({
          kind,
          name: `${kind} warm-up`,
          ids: warmUpIds(b + 1, GROUP_ID_WORDS),
          start,
          end: start + 1.5,
          attributes: { 'streamscore.batch.size': WARM_UP_BATCH },
          links,
          error: '',
        });
      }
    }
    made.length = 0;
    builder.build(writer.take());
    serializer.serializeRequest(made);
  }
}

/**
 * Lowers this thread's CPU priority (Linux: setpriority on the thread's own id changes only the
 * thread). Where it cannot, the thread runs at the process's priority.
 */
function lowerPriority(nice: number): void {
  if (nice === 0 || process.platform !== 'linux') return;
  try {
    // /proc/thread-self -> "<pid>/task/<tid>"
    const tid = Number(readlinkSync('/proc/thread-self').split('/').pop());
    setPriority(tid, nice);
  } catch {
    // not permitted or no procfs: same priority as the event loop
  }
}

function run(port: NonNullable<typeof parentPort>, data: TraceThreadData): void {
  lowerPriority(data.nice);
  const post = (message: FromTraceThread): void => port.postMessage(message);
  const reader = new OnDemandReader();
  const selfObs = new MeterProvider({ readers: [reader] });
  // The same resource as the metrics, so traces and metrics of one worker join up.
  const resource = telemetryResource(data.serviceName, data.version);
  const builder = new SpanBuilder({
    resource,
    groupId: data.groupId,
    spanProcessors: [
      new BatchSpanProcessor({
        // OTLP/protobuf: less than half the bytes of OTLP/JSON, and cheaper to write.
        exporter: new TraceExporter({ url: data.url }),
        maxQueueSize: data.queueSize,
        maxExportBatchSize: Math.min(2048, data.queueSize),
        scheduledDelayMillis: 1000,
        selfObsMeterProvider: selfObs,
      }),
    ],
  });
  warmUp(data.groupId, resource);
  const report = async (): Promise<void> => post({ type: 'stats', points: await reader.points() });
  const timer = setInterval(() => void report().catch(() => undefined), STATS_INTERVAL_MS);

  post({ type: 'ready' });
  port.on('message', (message: ToTraceThread) => {
    switch (message.type) {
      case 'spans':
        post({ type: 'built', spans: builder.build(message.records) });
        break;
      case 'flush':
        // A failed export is the processor's to count (error.type), not a reason to stop.
        void builder
          .forceFlush()
          .catch(() => undefined)
          .then(report)
          .catch(() => undefined)
          .then(() => post({ type: 'flushed', id: message.id }));
        break;
      case 'shutdown':
        clearInterval(timer);
        void builder
          .shutdown()
          .catch(() => undefined)
          .then(report)
          .catch(() => undefined)
          .finally(() => {
            post({ type: 'closed' });
            port.close();
          });
        break;
    }
  });
}

if (parentPort) run(parentPort, workerData as TraceThreadData);
