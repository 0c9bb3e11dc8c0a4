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
import { MeterProvider, MetricReader } from '@opentelemetry/sdk-metrics';
import { BatchSpanProcessor } from '@opentelemetry/sdk-trace';
import { TraceExporter } from './otlp/trace-exporter.js';
import { telemetryResource } from './resource.js';
import { SpanBuilder } from './span-builder.js';
import type { SpanRecords } from './span-records.js';

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
  const builder = new SpanBuilder({
    // The same resource as the metrics, so traces and metrics of one worker join up.
    resource: telemetryResource(data.serviceName, data.version),
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
