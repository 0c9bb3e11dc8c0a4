/**
 * Metrics and health endpoints of the service as users start it (startService with a config
 * object), against the real broker: what /metrics counts after good and poison requests, and what
 * /readyz says while running, after the broker is lost, and once the consumer has rejoined.
 */
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { Partitioners } from 'kafkajs';
import { afterEach, describe, expect, inject, it } from 'vitest';
import { AvroCodec } from '../../src/codec/avro.js';
import { loadConfig, type StreamscoreConfig } from '../../src/config/index.js';
import { startLocalBroker, type LocalBroker } from '../../src/kafka/local-broker.js';
import { loadDigitsDataset } from '../../src/model/digits-data.js';
import { startService, type Service } from '../../src/service.js';
import { silentLogger } from '../../src/telemetry/logger.js';
import { fixedPorts } from '../faults/helpers/ports.js';
import { testKafka, uniqueTopic, createWorkerTopics, type WorkerTopics } from './helpers/kafka.js';

const brokers = inject('kafkaBrokers');
const codec = new AvroCodec();
const PARTITIONS = 4;
const GOOD = 400;
const POISON = 40;

type Topics = WorkerTopics;

async function makeTopics(on: string[], name: string): Promise<Topics> {
  return createWorkerTopics(on, name, PARTITIONS);
}

function serviceConfig(on: string[], topics: Topics, kafka: object = {}): StreamscoreConfig {
  return loadConfig({
    env: {},
    overrides: {
      kafka: { brokers: on, groupId: uniqueTopic('metrics-group'), ...kafka },
      topics: {
        requests: [topics.requests],
        results: topics.results,
        deadLetter: topics.deadLetter,
      },
      model: { name: 'digits', version: '1', replicas: 1 },
      batching: { autotune: false, maxBatchSize: 32 },
      commit: { intervalMs: 100 },
      http: { host: '127.0.0.1', port: 0 },
      log: { level: 'silent' },
    },
  });
}

/** Good requests, and poison records of several kinds (none of which reaches the model). */
function requests(good: number, poison: number) {
  const { heldOut } = loadDigitsDataset();
  const out: { key: string; value: Buffer }[] = [];
  for (let i = 0; i < good; i++) {
    out.push({
      key: `g-${i}`,
      value: codec.encodeRequest({
        id: `g-${i}`,
        model: null,
        modelVersion: null,
        requestedAt: Date.now(),
        inputs: [{ name: 'pixels', shape: [64], data: heldOut[i % heldOut.length]!.pixels }],
      }),
    });
  }
  for (let i = 0; i < poison; i++) {
    const valid = out[i]!.value;
    const kinds = [randomBytes(64), valid.subarray(0, 30), Buffer.alloc(0)];
    out.push({ key: `p-${i}`, value: kinds[i % kinds.length]! });
  }
  return out;
}

async function produce(on: string[], topic: string, values: { key: string; value: Buffer }[]) {
  const producer = testKafka(on).producer({ createPartitioner: Partitioners.DefaultPartitioner });
  await producer.connect();
  try {
    for (let i = 0; i < values.length; i += 200) {
      await producer.send({ topic, messages: values.slice(i, i + 200) });
    }
  } finally {
    await producer.disconnect();
  }
}

async function get(service: Service, path: string): Promise<{ status: number; text: string }> {
  const response = await fetch(`${service.http!.url}${path}`);
  return { status: response.status, text: await response.text() };
}

/** Series of one metric, by their label sets as printed (`''` for none). */
function series(text: string, name: string): Map<string, number> {
  const found = new Map<string, number>();
  for (const line of text.split('\n')) {
    const match = /^([a-zA-Z_:][\w:]*)(\{[^}]*\})? (\S+)$/.exec(line);
    if (match && match[1] === name) found.set(match[2] ?? '', Number(match[3]));
  }
  return found;
}

const sum = (values: Map<string, number>) => [...values.values()].reduce((a, b) => a + b, 0);

/** Polls fn until it returns true (or the deadline passes, then fails naming `what`). */
async function waitFor(what: string, timeoutMs: number, fn: () => Promise<boolean>) {
  const deadline = Date.now() + timeoutMs;
  while (!(await fn())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms: ${what}`);
    await sleep(200);
  }
}

const services: Service[] = [];
let ownBroker: LocalBroker | undefined;
afterEach(async () => {
  await Promise.all(services.splice(0).map((s) => s.stop()));
  await ownBroker?.stop();
  ownBroker = undefined;
});

describe('metrics and health endpoints against a real broker', () => {
  it('counts received, produced, dead-lettered, batches and lag as the worker saw them', async () => {
    const topics = await makeTopics(brokers, 'metrics');
    const service = await startService(serviceConfig(brokers, topics), { log: silentLogger });
    services.push(service);

    expect(service.http!.port).toBeGreaterThan(0);
    expect((await get(service, '/healthz')).status).toBe(200);
    // startService resolves once the consumer is running; on a broker that just started, its
    // first join may fail (coordinator loading) and kafkajs restarts it: /readyz says so.
    await waitFor(
      '/readyz 200',
      30_000,
      async () => (await get(service, '/readyz')).status === 200,
    );
    const ready = await get(service, '/readyz');
    expect(JSON.parse(ready.text)).toMatchObject({
      status: 'ready',
      checks: { model: 'ready', kafka: 'assigned', partitions: PARTITIONS, stopping: false },
    });

    await produce(brokers, topics.requests, requests(GOOD, POISON));
    const snapshot = service.worker.metrics.snapshot;
    await waitFor('every request answered', 60_000, async () => {
      return (
        snapshot.produced === GOOD &&
        snapshot.deadLettered === POISON &&
        service.worker.inFlight === 0
      );
    });

    const { status, text } = await get(service, '/metrics');
    expect(status).toBe(200);
    expect(sum(series(text, 'streamscore_records_received_total'))).toBe(GOOD + POISON);
    expect(sum(series(text, 'streamscore_results_produced_total'))).toBe(GOOD);
    const dead = series(text, 'streamscore_records_dead_lettered_total');
    expect(sum(dead)).toBe(POISON);
    for (const labels of dead.keys()) expect(labels).toMatch(/category="unprocessable"/);
    expect(sum(series(text, 'streamscore_request_duration_count'))).toBe(GOOD);
    // Read → inference start, once per request that reached the model.
    expect(sum(series(text, 'streamscore_request_wait_count'))).toBe(GOOD);
    // Every batch is one model call; poison never reaches the model.
    expect(snapshot.batches).toBeGreaterThan(0);
    expect(sum(series(text, 'streamscore_batch_size_count'))).toBe(snapshot.batches);
    expect(sum(series(text, 'streamscore_batch_size_sum'))).toBe(GOOD);
    expect(sum(series(text, 'streamscore_inference_duration_count'))).toBe(snapshot.batches);
    expect(series(text, 'streamscore_requests_in_flight')).toEqual(new Map([['', 0]]));
    expect(series(text, 'streamscore_batch_size_limit')).toEqual(new Map([['', 32]]));
    expect(text).toMatch(/^streamscore_model_info\{model="digits",version="1",[^}]*\} 1$/m);
    expect(text).toMatch(/^target_info\{service_name="streamscore",/m);

    // The lag of each partition, down to 0 once everything was read.
    const lag = series(text, 'streamscore.consumer.lag'.replaceAll('.', '_'));
    expect([...lag.keys()].sort()).toEqual(
      Array.from(
        { length: PARTITIONS },
        (_, p) => `{topic="${topics.requests}",partition="${p}"}`,
      ).sort(),
    );
    expect([...lag.values()]).toEqual(Array(PARTITIONS).fill(0));

    // Stopping: not ready while draining, and the server is gone afterwards.
    const stopping = service.stop();
    expect(service.readiness.state().checks.stopping).toBe(true);
    expect((await stopping).drained).toBe(true);
    await expect(fetch(`${service.http!.url}/healthz`)).rejects.toThrow();
  });

  it('the service readiness turns 503 when the consumer loses its connection, 200 on rejoin', async () => {
    const topics = await makeTopics(brokers, 'ready');
    const service = await startService(serviceConfig(brokers, topics), { log: silentLogger });
    services.push(service);
    await waitFor(
      '/readyz 200',
      30_000,
      async () => (await get(service, '/readyz')).status === 200,
    );

    // What KafkajsSource reports on a kafkajs CRASH or DISCONNECT event.
    service.readiness.connectionLost('consumer crashed: test; restarting');
    const lost = await get(service, '/readyz');
    expect(lost.status).toBe(503);
    expect(JSON.parse(lost.text)).toMatchObject({
      status: 'not ready',
      checks: { kafka: 'connection-lost' },
      failing: [expect.stringMatching(/^kafka: consumer lost its connection/)],
    });
    expect((await get(service, '/healthz')).status).toBe(200);

    service.readiness.assigned(PARTITIONS);
    expect((await get(service, '/readyz')).status).toBe(200);
  });

  it('end to end: its own broker stops, /readyz turns 503; the broker comes back, 200 again', async () => {
    const started = Date.now();
    const [port, controllerPort] = await fixedPorts(2);
    ownBroker = await startLocalBroker({ port, controllerPort, heapMb: 384 });
    const own = ownBroker.brokers;
    const topics = await makeTopics(own, 'outage');
    const service = await startService(
      // A short session: after the restart, the group waits this long for the member the
      // crashed consumer was before completing the rejoin.
      serviceConfig(own, topics, {
        connectionTimeoutMs: 1000,
        requestTimeoutMs: 5000,
        sessionTimeoutMs: 6000,
      }),
      { log: silentLogger },
    );
    services.push(service);
    await waitFor(
      '/readyz 200',
      30_000,
      async () => (await get(service, '/readyz')).status === 200,
    );
    const marks: string[] = [];
    const t = (what: string) =>
      marks.push(`${what} ${((Date.now() - started) / 1000).toFixed(1)} s`);
    t('ready');

    await ownBroker.stop();
    t('broker stopped');
    await waitFor('/readyz 503 after the broker stopped', 30_000, async () => {
      return (await get(service, '/readyz')).status === 503;
    });
    t('503');
    const down = JSON.parse((await get(service, '/readyz')).text) as { checks: { kafka: string } };
    expect(down.checks.kafka).toBe('connection-lost');
    expect((await get(service, '/healthz')).status).toBe(200);

    ownBroker = await ownBroker.restart();
    t('broker restarted');
    await waitFor('/readyz 200 after the broker came back', 60_000, async () => {
      return (await get(service, '/readyz')).status === 200;
    });
    t('200');
    console.error(`[metrics] /readyz through a broker outage: ${marks.join(', ')}`);
  });
});
