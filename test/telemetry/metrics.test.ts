/**
 * The metrics SDK as the service starts it (src/telemetry/metrics-sdk.ts) with the worker's
 * instruments (WorkerMetrics): the Prometheus text served at /metrics, OTLP pushes, and how it
 * interacts with the OpenTelemetry API's global meter provider.
 */
import { createServer, type Server } from 'node:http';
import { Writable } from 'node:stream';
import { metrics } from '@opentelemetry/api';
import { afterEach, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config/index.js';
import { Readiness } from '../../src/http/readiness.js';
import { startHttpServer, type HttpServer } from '../../src/http/server.js';
import { createLogger, silentLogger } from '../../src/telemetry/logger.js';
import { startMetricsSdk, type MetricsSdk } from '../../src/telemetry/metrics-sdk.js';
import { LATENCY_BUCKETS_MS, WorkerMetrics } from '../../src/telemetry/metrics.js';

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

function telemetry(overrides: Record<string, unknown> = {}) {
  return loadConfig({ env: {}, overrides: { telemetry: overrides } }).telemetry;
}

function sdk(overrides: Record<string, unknown> = {}, log = silentLogger): MetricsSdk {
  const started = startMetricsSdk(telemetry(overrides), { log, version: '9.9.9' });
  cleanups.push(() => started.shutdown());
  return started;
}

async function serve(started: MetricsSdk): Promise<HttpServer> {
  const server = await startHttpServer({
    host: '127.0.0.1',
    port: 0,
    readiness: new Readiness(),
    metrics: started.scrape,
    log: silentLogger,
  });
  cleanups.push(() => server.close());
  return server;
}

async function scrape(server: HttpServer): Promise<string> {
  const response = await fetch(`${server.url}/metrics`);
  expect(response.status).toBe(200);
  return response.text();
}

/** The value of one series, by its exact name and labels as printed. */
function value(text: string, series: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

/** A local OTLP/HTTP receiver that answers every push with success; its endpoint. */
async function otlpReceiver(): Promise<string> {
  const receiver: Server = createServer((req, res) => {
    req.resume();
    req.on('end', () => res.writeHead(200, { 'content-type': 'application/json' }).end('{}'));
  });
  await new Promise<void>((resolve) => receiver.listen(0, '127.0.0.1', resolve));
  cleanups.push(() => new Promise((resolve) => receiver.close(() => resolve())));
  return `http://127.0.0.1:${(receiver.address() as { port: number }).port}`;
}

/** Records something on every worker instrument; returns a setter for the in-flight gauge. */
function recordEverything(started: MetricsSdk): (n: number) => void {
  const worker = new WorkerMetrics(started.meter);
  worker.received(5);
  worker.produced(3);
  worker.deadLetter('DECODE_FAILED', 'unprocessable');
  worker.deadLetter('DECODE_FAILED', 'unprocessable');
  worker.batch(3, 4.5);
  worker.endToEnd(12);
  worker.endToEnd(700);
  worker.requestWaited(3);
  worker.skipped(1);
  worker.sendRetry();
  worker.registerConsumerLag(() => [
    { topic: 'requests', partition: 0, lag: 0 },
    { topic: 'requests', partition: 1, lag: 42 },
  ]);
  let inFlight = 7;
  worker.registerInFlight(() => inFlight);
  worker.registerModelInfo(() => ({ model: 'digits', version: '1', backend: 'wasm' }));
  worker.registerBatchSizeLimit(() => 32);
  return (n) => (inFlight = n);
}

describe('metrics SDK + WorkerMetrics', () => {
  it('serves every worker instrument as Prometheus text', async () => {
    const started = sdk({ serviceName: 'scorer' });
    const setInFlight = recordEverything(started);

    const text = await scrape(await serve(started));
    expect(text).toMatch(
      /^target_info\{service_name="scorer",service_version="9\.9\.9",service_instance_id="\d+@[^"]+"\} 1$/m,
    );
    expect(value(text, 'streamscore_records_received_total')).toBe(5);
    expect(value(text, 'streamscore_results_produced_total')).toBe(3);
    expect(
      value(
        text,
        'streamscore_records_dead_lettered_total{code="DECODE_FAILED",category="unprocessable"}',
      ),
    ).toBe(2);
    expect(value(text, 'streamscore_records_skipped_total')).toBe(1);
    expect(value(text, 'streamscore_send_retries_total')).toBe(1);
    expect(value(text, 'streamscore_batch_size_count')).toBe(1);
    expect(value(text, 'streamscore_batch_size_sum')).toBe(3);
    expect(value(text, 'streamscore_inference_duration_sum')).toBe(4.5);
    expect(value(text, 'streamscore_request_duration_count')).toBe(2);
    expect(value(text, 'streamscore_request_duration_bucket{le="20"}')).toBe(1);
    expect(value(text, 'streamscore_request_duration_bucket{le="1000"}')).toBe(2);
    expect(value(text, 'streamscore_request_wait_count')).toBe(1);
    expect(value(text, 'streamscore_request_wait_bucket{le="5"}')).toBe(1);
    expect(value(text, 'streamscore_consumer_lag{topic="requests",partition="0"}')).toBe(0);
    expect(value(text, 'streamscore_consumer_lag{topic="requests",partition="1"}')).toBe(42);
    expect(value(text, 'streamscore_requests_in_flight')).toBe(7);
    expect(value(text, 'streamscore_model_info{model="digits",version="1",backend="wasm"}')).toBe(
      1,
    );
    expect(value(text, 'streamscore_batch_size_limit')).toBe(32);
    // Latency histograms use the millisecond buckets.
    for (const name of ['inference_duration', 'request_duration', 'request_wait']) {
      const bounds = [
        ...text.matchAll(new RegExp(`^streamscore_${name}_bucket\\{le="([^"]+)"\\}`, 'gm')),
      ].map((m) => m[1]);
      expect(bounds).toEqual([...LATENCY_BUCKETS_MS.map(String), '+Inf']);
    }

    // Observable gauges are read at each scrape.
    setInFlight(0);
    expect(value(await scrape(await serve(started)), 'streamscore_requests_in_flight')).toBe(0);
  });

  it('with an OTLP endpoint, /metrics is written from the OTLP reader (one copy of the data) and reads the same', async () => {
    const alone = sdk({ serviceName: 'scorer' });
    recordEverything(alone);
    const withOtlp = sdk({ serviceName: 'scorer', otlpEndpoint: await otlpReceiver() });
    recordEverything(withOtlp);
    const expected = await scrape(await serve(alone));
    expect(await scrape(await serve(withOtlp))).toBe(expected);
  });

  it('keeps /metrics cumulative when OTLP is to push deltas (two readers then)', async () => {
    const before = process.env['OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE'];
    process.env['OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE'] = 'delta';
    cleanups.push(async () => {
      if (before === undefined)
        delete process.env['OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE'];
      else process.env['OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE'] = before;
    });
    const started = sdk({ otlpEndpoint: await otlpReceiver() });
    const worker = new WorkerMetrics(started.meter);
    const server = await serve(started);
    worker.received(5);
    expect(value(await scrape(server), 'streamscore_records_received_total')).toBe(5);
    worker.received(2);
    expect(value(await scrape(server), 'streamscore_records_received_total')).toBe(7);
  });

  it('registers globally; an instrument made before that stays a no-op (the API has no proxy meter)', async () => {
    const early = metrics.getMeter('early').createCounter('early.counter');
    const started = sdk();
    expect(started.registeredGlobally).toBe(true);
    const late = metrics.getMeter('late').createCounter('late.counter');
    early.add(1);
    late.add(1);
    const text = await scrape(await serve(started));
    expect(text).toContain('late_counter_total');
    expect(text).not.toContain('early_counter_total');
  });

  it('a second SDK in the same process counts on its own; the first one frees the global slot on shutdown', async () => {
    const first = sdk();
    const second = sdk();
    expect(first.registeredGlobally).toBe(true);
    expect(second.registeredGlobally).toBe(false);
    new WorkerMetrics(first.meter).received(1);
    new WorkerMetrics(second.meter).received(2);
    expect(value(await scrape(await serve(first)), 'streamscore_records_received_total')).toBe(1);
    expect(value(await scrape(await serve(second)), 'streamscore_records_received_total')).toBe(2);
    await first.shutdown();
    const third = sdk();
    expect(third.registeredGlobally).toBe(true);
  });

  it('pushes OTLP/HTTP to <endpoint>/v1/metrics on its interval, and once more on shutdown', async () => {
    const received: { path: string; body: Buffer }[] = [];
    const collector: Server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (chunk: Buffer) => chunks.push(chunk));
      req.on('end', () => {
        received.push({ path: req.url ?? '', body: Buffer.concat(chunks) });
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end('{}');
      });
    });
    await new Promise<void>((resolve) => collector.listen(0, '127.0.0.1', resolve));
    cleanups.push(() => new Promise((resolve) => collector.close(() => resolve())));
    const { port } = collector.address() as { port: number };

    // Interval: pushes come by themselves.
    const periodic = startMetricsSdk(
      telemetry({ otlpEndpoint: `http://127.0.0.1:${port}/`, metricsExportIntervalMs: 100 }),
      { log: silentLogger, version: '1' },
    );
    new WorkerMetrics(periodic.meter).received(3);
    await expect.poll(() => received.length, { timeout: 5000 }).toBeGreaterThan(0);
    await periodic.shutdown();
    expect(received[0]!.path).toBe('/v1/metrics');
    expect(received[0]!.body.toString('latin1')).toContain('streamscore.records.received');

    // Shutdown flushes what the interval has not pushed yet.
    received.length = 0;
    const flushing = startMetricsSdk(
      telemetry({ otlpEndpoint: `http://127.0.0.1:${port}`, metricsExportIntervalMs: 60_000 }),
      { log: silentLogger, version: '1' },
    );
    new WorkerMetrics(flushing.meter).produced(1);
    expect(received).toHaveLength(0);
    await flushing.shutdown();
    expect(received.map((r) => r.path)).toEqual(['/v1/metrics']);
    expect(received[0]!.body.toString('latin1')).toContain('streamscore.results.produced');
  });

  it('logs once when OTLP pushes fail', async () => {
    const lines: Record<string, unknown>[] = [];
    const log = createLogger(
      'info',
      new Writable({
        write(chunk: Buffer, _encoding, done) {
          lines.push(JSON.parse(chunk.toString()) as Record<string, unknown>);
          done();
        },
      }),
    );
    // Nothing listens on port 1.
    const failing = startMetricsSdk(
      telemetry({ otlpEndpoint: 'http://127.0.0.1:1', metricsExportIntervalMs: 100 }),
      { log, version: '1' },
    );
    new WorkerMetrics(failing.meter).received(1);
    await expect
      .poll(() => lines.filter((l) => String(l.msg).startsWith('metrics push over OTLP failed')), {
        timeout: 5000,
      })
      .toHaveLength(1);
    await new Promise((resolve) => setTimeout(resolve, 400));
    await failing.shutdown();
    expect(
      lines.filter((l) => String(l.msg).startsWith('metrics push over OTLP failed')),
    ).toHaveLength(1);
    expect(lines[0]).toMatchObject({
      msg: 'metrics pushed over OTLP',
      url: 'http://127.0.0.1:1/v1/metrics',
    });
  });

  it('without Prometheus (http.enabled: false) there is nothing to scrape', () => {
    const started = startMetricsSdk(telemetry(), {
      log: silentLogger,
      version: '1',
      prometheus: false,
    });
    cleanups.push(() => started.shutdown());
    expect(started.scrape).toBeUndefined();
  });
});
