import {
  AggregationTemporality,
  type DataPoint,
  InMemoryMetricExporter,
  MeterProvider,
  PeriodicExportingMetricReader,
} from '@opentelemetry/sdk-metrics';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config/index.js';
import type { InboundRecord } from '../../src/kafka/types.js';
import { silentLogger } from '../../src/telemetry/logger.js';
import { startTracing } from '../../src/telemetry/tracing.js';
import { freePorts } from '../../src/util/local-process.js';
import { startBodyReceiver } from '../helpers/http-receiver.js';

const record = (offset: number): InboundRecord => ({
  topic: 'requests',
  partition: 0,
  offset: String(offset),
  key: null,
  value: Buffer.alloc(0),
  headers: {},
  timestamp: Date.now(),
});

/** The span processor's `otel.sdk.processor.span.processed` points, as last exported. */
const processedPoints = (exporter: InMemoryMetricExporter): DataPoint<number>[] =>
  exporter
    .getMetrics()
    .at(-1)!
    .scopeMetrics.flatMap((s) => s.metrics)
    .filter((m) => m.descriptor.name === 'otel.sdk.processor.span.processed')
    .flatMap((m) => m.dataPoints as DataPoint<number>[]);

describe('startTracing', () => {
  it('reports ready once its thread has loaded, with no span handed to it', async () => {
    const [port] = await freePorts(1, (message) => new Error(message));
    const handle = startTracing(
      { ...loadConfig({ env: {} }).telemetry, otlpEndpoint: `http://127.0.0.1:${port}` },
      silentLogger,
      { version: '0', groupId: 'g' },
    )!;
    let ready = false;
    void handle.ready.then(() => (ready = true));
    await expect.poll(() => ready, { timeout: 20_000 }).toBe(true);
    await handle.shutdown();
  });

  it('exports only the worker’s spans: what the thread makes to warm up at start is never sent or counted', async () => {
    const receiver = await startBodyReceiver();
    const bodies = receiver.bodies;
    const exporter = new InMemoryMetricExporter(AggregationTemporality.CUMULATIVE);
    const reader = new PeriodicExportingMetricReader({ exporter, exportIntervalMillis: 60_000 });
    const meterProvider = new MeterProvider({ readers: [reader] });
    const handle = startTracing(
      { ...loadConfig({ env: {} }).telemetry, otlpEndpoint: receiver.url },
      silentLogger,
      { version: '0', groupId: 'g', meterProvider },
    )!;
    try {
      await handle.ready;
      await handle.flush();
      expect(bodies).toHaveLength(0);
      const r = record(7);
      handle.requests.received(r);
      handle.requests.answered(r, 'result');
      await handle.flush();
      await reader.forceFlush();
      const processed = processedPoints(exporter).reduce((n, p) => n + p.value, 0);
      expect(processed).toBe(1);
      expect(bodies).toHaveLength(1);
      expect(bodies[0]!.includes('process requests')).toBe(true);
      expect(bodies[0]!.includes('warm-up')).toBe(false);
    } finally {
      await handle.shutdown();
      await meterProvider.shutdown();
      await receiver.close();
    }
  });

  it('counts spans dropped when the export queue is full in the worker metrics, never blocking', async () => {
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
    const handle = startTracing(telemetry, silentLogger, {
      version: '0',
      groupId: 'g',
      meterProvider,
    })!;
    // 1,000 requests answered at once, faster than any thread takes them.
    for (let i = 0; i < 1000; i++) {
      const r = record(i);
      handle.requests.received(r);
      handle.requests.answered(r, 'result');
    }
    await handle.flush();
    await reader.forceFlush();
    const points = processedPoints(exporter);
    const dropped = points
      .filter((p) => p.attributes['error.type'] === 'queue_full')
      .reduce((n, p) => n + p.value, 0);
    // 1000 ended; at most 256 in flight to the thread and 256 in its queue were held.
    expect(dropped).toBeGreaterThanOrEqual(1000 - 2 * 256);
    expect(dropped).toBeLessThanOrEqual(1000 - 256);
    // What reached the processor is accounted for too: exported or failed, never lost silently.
    const processed = points.reduce((n, p) => n + p.value, 0);
    expect(processed).toBeGreaterThanOrEqual(dropped);
    await handle.shutdown();
    await meterProvider.shutdown();
  });
});
