import { SpanKind } from '@opentelemetry/api';
import {
  AggregationTemporality,
  type DataPoint,
  InMemoryMetricExporter,
  MeterProvider,
  PeriodicExportingMetricReader,
} from '@opentelemetry/sdk-metrics';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config/index.js';
import { silentLogger } from '../../src/telemetry/logger.js';
import { startTracing } from '../../src/telemetry/tracing.js';
import { freePorts } from '../../src/util/local-process.js';

describe('startTracing', () => {
  it('counts spans dropped on a full export queue in the worker metrics, never blocking', async () => {
    const exporter = new InMemoryMetricExporter(AggregationTemporality.CUMULATIVE);
    const reader = new PeriodicExportingMetricReader({ exporter, exportIntervalMillis: 60_000 });
    const meterProvider = new MeterProvider({ readers: [reader] });
    // Nothing listens there: exports fail, the queue (256 spans) fills, newer spans are dropped.
    const [port] = await freePorts(1, (message) => new Error(message));
    const telemetry = {
      ...loadConfig({ env: {} }).telemetry,
      otlpEndpoint: `http://127.0.0.1:${port}`,
      traceQueueSize: 256,
    };
    const handle = startTracing(telemetry, silentLogger, '0', meterProvider)!;
    for (let i = 0; i < 1000; i++) handle.tracer.startSpan('s', { kind: SpanKind.CONSUMER }).end();
    await reader.forceFlush();
    const points = exporter
      .getMetrics()
      .at(-1)!
      .scopeMetrics.flatMap((s) => s.metrics)
      .filter((m) => m.descriptor.name === 'otel.sdk.processor.span.processed')
      .flatMap((m) => m.dataPoints as DataPoint<number>[]);
    const dropped = points
      .filter((p) => p.attributes['error.type'] === 'queue_full')
      .reduce((n, p) => n + (p.value as number), 0);
    // 1000 ended; at most the queue's 256 were held (one export may have taken some out first).
    expect(dropped).toBeGreaterThanOrEqual(1000 - 2 * 256);
    expect(dropped).toBeLessThanOrEqual(1000 - 256);
    await handle.shutdown();
    await meterProvider.shutdown();
  });
});
