import type { IncomingMessage, ServerResponse } from 'node:http';
import { metrics, type Meter } from '@opentelemetry/api';
import { ExportResultCode, type ExportResult } from '@opentelemetry/core';
import { OTLPMetricExporter } from '@opentelemetry/exporter-metrics-otlp-http';
import { PrometheusExporter, PrometheusSerializer } from '@opentelemetry/exporter-prometheus';
import {
  AggregationTemporality,
  AggregationType,
  InstrumentType,
  MeterProvider,
  PeriodicExportingMetricReader,
  type IMetricReader,
  type MetricReader,
  type PushMetricExporter,
  type ResourceMetrics,
} from '@opentelemetry/sdk-metrics';
import type { StreamscoreConfig } from '../config/schema.js';
import type { Logger } from './logger.js';
import { telemetryResource } from './resource.js';

export interface MetricsSdk {
  /** The meter the worker's instruments come from (WorkerMetrics). */
  meter: Meter;
  /** The provider itself, for the trace SDK's own metrics (dropped spans, export queue). */
  meterProvider: MeterProvider;
  /** Serves the Prometheus text format of every instrument of this provider (GET /metrics). */
  scrape: ((request: IncomingMessage, response: ServerResponse) => void) | undefined;
  /** Whether this provider is the API's global one (the first SDK started in the process). */
  registeredGlobally: boolean;
  /** Pushes what the OTLP reader holds one last time, then stops; idempotent. */
  shutdown(): Promise<void>;
}

export interface MetricsSdkOptions {
  log: Logger;
  /** service.version of the resource. */
  version: string;
  /** Whether to collect for /metrics (http.enabled). Default true. */
  prometheus?: boolean;
}

/**
 * Starts the metrics SDK: a MeterProvider with
 *
 * - a Prometheus reader that starts no server of its own: its handler is served by our HTTP
 *   server at /metrics (src/http/server.ts). It collects only when scraped, so it costs nothing
 *   while nobody scrapes;
 * - when telemetry.otlpEndpoint is set, a periodic reader pushing OTLP/HTTP to
 *   `<endpoint>/v1/metrics` every telemetry.metricsExportIntervalMs.
 *
 * With both, and an OTLP exporter that wants what Prometheus shows (cumulative sums, the default
 * aggregations: unless OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE says otherwise), the
 * periodic reader is the only one and /metrics is written from it: every reader keeps its own
 * copy of every instrument's data, so a second reader doubled the cost of each measurement the
 * worker records per request.
 *
 * The provider is registered as the API's global one when none is yet (instruments made through
 * `metrics.getMeter()` before that stay no-ops forever: the API has no proxy meter, so this must
 * run before any instrument is created). The worker's own instruments do not depend on that: they
 * are made from `meter`, so several services in one process (tests) each count their own.
 */
export function startMetricsSdk(
  config: StreamscoreConfig['telemetry'],
  { log, version, prometheus: withPrometheus = true }: MetricsSdkOptions,
): MetricsSdk {
  const otlp = config.otlpEndpoint === null ? undefined : otlpReader(config, log);
  const sharesOtlp = withPrometheus && otlp !== undefined && readsAsPrometheus(otlp.exporter);
  const prometheus =
    withPrometheus && !sharesOtlp
      ? // One instrumentation scope: otel_scope_* labels on every series would say nothing.
        new PrometheusExporter({ preventServerStart: true, withoutScopeInfo: true })
      : undefined;
  const readers: IMetricReader[] = [];
  if (prometheus) readers.push(prometheus);
  if (otlp) readers.push(otlp.reader);
  const provider = new MeterProvider({
    resource: telemetryResource(config.serviceName, version),
    readers,
  });
  const registeredGlobally = metrics.setGlobalMeterProvider(provider);
  let stopped: Promise<void> | null = null;
  return {
    meter: provider.getMeter('streamscore', version),
    meterProvider: provider,
    scrape: prometheus
      ? (request, response) => prometheus.getMetricsRequestHandler(request, response)
      : sharesOtlp
        ? prometheusText(otlp.reader)
        : undefined,
    registeredGlobally,
    shutdown() {
      stopped ??= (async () => {
        if (registeredGlobally) metrics.disable();
        try {
          await provider.shutdown();
        } catch (err) {
          log.warn({ err }, 'metrics did not shut down cleanly');
        }
      })();
      return stopped;
    },
  };
}

function otlpReader(
  config: StreamscoreConfig['telemetry'],
  log: Logger,
): { reader: PeriodicExportingMetricReader; exporter: PushMetricExporter } {
  const url = `${config.otlpEndpoint!.replace(/\/+$/, '')}/v1/metrics`;
  const interval = config.metricsExportIntervalMs;
  // The reader refuses a timeout longer than its interval; the exporter retries (connection
  // refused, 429, 503) within its own timeout, which therefore must not be longer either.
  const timeout = Math.min(interval, 10_000);
  const exporter = new LoggingExporter(
    new OTLPMetricExporter({ url, timeoutMillis: timeout }),
    url,
    log,
  );
  const reader = new PeriodicExportingMetricReader({
    exporter,
    exportIntervalMillis: interval,
    exportTimeoutMillis: timeout,
  });
  log.info({ url, intervalMs: interval }, 'metrics pushed over OTLP');
  return { reader, exporter };
}

/** Whether the exporter asks for what Prometheus shows: cumulative, default aggregations. */
function readsAsPrometheus(exporter: PushMetricExporter): boolean {
  return Object.values(InstrumentType).every(
    (type) =>
      (exporter.selectAggregationTemporality?.(type) ?? AggregationTemporality.CUMULATIVE) ===
        AggregationTemporality.CUMULATIVE &&
      (exporter.selectAggregation?.(type).type ?? AggregationType.DEFAULT) ===
        AggregationType.DEFAULT,
  );
}

/** /metrics from another reader's collection, written as the Prometheus exporter writes it. */
function prometheusText(
  reader: MetricReader,
): (request: IncomingMessage, response: ServerResponse) => void {
  // The Prometheus exporter's defaults, and no otel_scope_* labels (as above).
  const serializer = new PrometheusSerializer(undefined, false, undefined, false, true);
  return (_request, response) => {
    response.statusCode = 200;
    response.setHeader('content-type', 'text/plain');
    reader.collect().then(
      ({ resourceMetrics }) => response.end(serializer.serialize(resourceMetrics)),
      (err: unknown) => response.end(`# failed to export metrics: ${String(err)}`),
    );
  };
}

/**
 * An OTLP exporter whose failures are logged: once when pushes start failing, once when they
 * succeed again (the SDK only reports them through the diag logger, which is silent by default).
 */
class LoggingExporter implements PushMetricExporter {
  private failing = false;
  readonly selectAggregationTemporality: PushMetricExporter['selectAggregationTemporality'];
  readonly selectAggregation: PushMetricExporter['selectAggregation'];

  constructor(
    private readonly inner: PushMetricExporter,
    private readonly url: string,
    private readonly log: Logger,
  ) {
    this.selectAggregationTemporality = inner.selectAggregationTemporality?.bind(inner);
    this.selectAggregation = inner.selectAggregation?.bind(inner);
  }

  export(metrics: ResourceMetrics, resultCallback: (result: ExportResult) => void): void {
    this.inner.export(metrics, (result) => {
      if (result.code !== ExportResultCode.SUCCESS && !this.failing) {
        this.failing = true;
        this.log.warn(
          { err: result.error, url: this.url },
          'metrics push over OTLP failed; retrying at the next interval',
        );
      } else if (result.code === ExportResultCode.SUCCESS && this.failing) {
        this.failing = false;
        this.log.info({ url: this.url }, 'metrics push over OTLP succeeded again');
      }
      resultCallback(result);
    });
  }

  forceFlush(): Promise<void> {
    return this.inner.forceFlush();
  }

  shutdown(): Promise<void> {
    return this.inner.shutdown();
  }
}
