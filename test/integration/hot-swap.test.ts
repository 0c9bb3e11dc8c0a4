/**
 * Hot swap against the real broker: with model.version: latest, a new version written into the
 * repository while requests flow is loaded, warmed and swapped in without losing a request or
 * dropping readiness; a corrupted version is refused and the old one keeps serving; 20 swaps in a
 * row leave tensors and RSS flat.
 */
import path from 'node:path';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { Partitioners } from 'kafkajs';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { AvroCodec } from '../../src/codec/avro.js';
import { loadConfig } from '../../src/config/index.js';
import { selectBackend } from '../../src/model/backend.js';
import { loadDigitsDataset } from '../../src/model/digits-data.js';
import type { ReloadResult } from '../../src/model/reloader.js';
import { startService, type Service } from '../../src/service.js';
import { createLogger, silentLogger } from '../../src/telemetry/logger.js';
import { HEADER } from '../../src/worker/headers.js';
import { tempDir, writeDigitsVersion } from '../model/helpers.js';
import { createTopics, readAll, testKafka, uniqueTopic } from './helpers/kafka.js';

const brokers = inject('kafkaBrokers');
const codec = new AvroCodec();
const PARTITIONS = 4;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until(what: string, check: () => boolean | Promise<boolean>, timeoutMs = 30_000) {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(25);
  }
}

/** A pino logger whose lines are kept, parsed, for assertions. */
function capturingLogger() {
  const lines: Record<string, unknown>[] = [];
  const log = createLogger('info', {
    write: (line: string) => {
      lines.push(JSON.parse(line) as Record<string, unknown>);
    },
  });
  return { log, lines };
}

describe('hot swap of model versions', () => {
  const kafka = testKafka(brokers);
  const { heldOut } = loadDigitsDataset();
  const services: Service[] = [];
  const cleanups: (() => Promise<void>)[] = [];

  afterAll(async () => {
    await Promise.all(services.map((s) => s.stop()));
    for (const c of cleanups) await c();
  });

  const request = (id: string) =>
    codec.encodeRequest({
      id,
      model: null,
      modelVersion: null,
      requestedAt: Date.now(),
      inputs: [
        {
          name: 'pixels',
          shape: [64],
          data: heldOut[Number(id.slice(2)) % heldOut.length]!.pixels,
        },
      ],
    });

  interface Shared {
    service: Service;
    topics: { requests: string; results: string; deadLetter: string };
    repository: string;
    lines: Record<string, unknown>[];
  }
  let shared: Shared;

  it('swaps version 2 in under steady load: none lost, versions in order, /readyz 200 throughout', async () => {
    const { dir: repository, remove } = await tempDir('hot-swap');
    cleanups.push(remove);
    await writeDigitsVersion(repository, '1');
    const topics = {
      requests: uniqueTopic('swap-requests'),
      results: uniqueTopic('swap-results'),
      deadLetter: uniqueTopic('swap-dlq'),
    };
    await createTopics(
      brokers,
      Object.values(topics).map((topic) => ({ topic, numPartitions: PARTITIONS })),
    );
    const { log, lines } = capturingLogger();
    const config = loadConfig({
      env: {},
      overrides: {
        kafka: { brokers, groupId: uniqueTopic('swap-group') },
        topics: {
          requests: [topics.requests],
          results: topics.results,
          deadLetter: topics.deadLetter,
        },
        model: { repository, name: 'digits', version: 'latest', replicas: 1, backend: 'wasm' },
        batching: { maxBatchSize: 32, maxDelayMs: 5 },
        commit: { intervalMs: 100 },
        http: { port: 0 },
      },
    });
    const service = await startService(config, { log });
    services.push(service);
    shared = { service, topics, repository, lines };
    const url = service.http!.url;
    await until('/readyz 200', async () => (await fetch(`${url}/readyz`)).status === 200);

    // /readyz every 50 ms from now on.
    const readyz: number[] = [];
    let polling = true;
    const poller = (async () => {
      while (polling) {
        readyz.push((await fetch(`${url}/readyz`)).status);
        await sleep(50);
      }
    })();

    const producer = kafka.producer({ createPartitioner: Partitioners.DefaultPartitioner });
    await producer.connect();
    let produced = 0;
    /** Requests produced after the swap was complete: these must be answered by version 2. */
    let firstAfterSwap = -1;
    let producing = true;
    const traffic = (async () => {
      while (producing) {
        if (firstAfterSwap < 0 && service.model.info.version === '2') firstAfterSwap = produced;
        const messages = Array.from({ length: 40 }, (_, k) => ({
          key: `r-${produced + k}`,
          value: request(`r-${produced + k}`),
        }));
        await producer.send({ topic: topics.requests, messages });
        produced += messages.length;
        await sleep(20);
      }
    })();

    await sleep(1500);
    const swapStarted = Date.now();
    await writeDigitsVersion(repository, '2');
    await until('version 2 swapped in', () => service.model.info.version === '2');
    const swapMs = Date.now() - swapStarted;
    // The old replica pool is disposed once its last batch is done.
    await until('version 1 disposed', () => service.model.retiring === 0);
    await sleep(1500);
    producing = false;
    await traffic;
    await producer.disconnect();

    const results = await readAll(brokers, topics.results, {
      expected: produced,
      timeoutMs: 60_000,
    });
    await sleep(300); // a few more polls after the last answer
    polling = false;
    await poller;

    const ids = results.map((m) => codec.decodeResult(m.value!).id);
    const unique = new Set(ids);
    const duplicates = ids.length - unique.size;
    // Every request answered; in at-least-once mode a duplicate would be allowed but counted.
    expect(unique.size).toBe(produced);
    expect(duplicates).toBe(0);

    const byVersion = { '1': 0, '2': 0 } as Record<string, number>;
    const seen2 = new Set<number>();
    let outOfOrder = 0;
    let lateV1 = 0;
    for (const m of results) {
      const result = codec.decodeResult(m.value!);
      const header = m.headers?.[HEADER.modelVersion]?.toString();
      expect(header).toBe(result.modelVersion);
      byVersion[result.modelVersion] = (byVersion[result.modelVersion] ?? 0) + 1;
      // Per partition: once version 2 answered, version 1 never again.
      if (result.modelVersion === '2') seen2.add(m.partition);
      else if (seen2.has(m.partition)) outOfOrder++;
      if (result.modelVersion === '1' && Number(result.id.slice(2)) >= firstAfterSwap) lateV1++;
    }
    expect(outOfOrder).toBe(0);
    expect(lateV1).toBe(0);
    expect(byVersion['1']).toBeGreaterThan(0);
    expect(byVersion['2']).toBeGreaterThan(0);
    expect(readyz.length).toBeGreaterThan(40);
    expect(readyz.every((s) => s === 200)).toBe(true);
    expect(lines.some((l) => l.msg === 'model version swapped in' && l.version === '2')).toBe(true);
    console.log(
      `hot swap under load: ${produced} requests, v1 ${byVersion['1']}, v2 ${byVersion['2']}, ` +
        `duplicates ${duplicates}, swap ${swapMs} ms after card.json, /readyz ${readyz.length} polls all 200`,
    );
  });

  it('refuses a corrupted version 3 naming the file; version 2 keeps serving', async () => {
    const { service, topics, repository, lines } = shared;
    const url = service.http!.url;
    const dir3 = await writeDigitsVersion(repository, '3', (weights) => {
      weights[100] = weights[100]! ^ 0xff;
    });
    const file = path.join(dir3, 'weights.bin');
    await until('refusal logged', () =>
      lines.some((l) => l.level === 40 && l.file === file && l.version === '3'),
    );
    expect(service.model.info.version).toBe('2');
    const metrics = await (await fetch(`${url}/metrics`)).text();
    expect(metrics).toMatch(
      /streamscore_model_swaps_total\{outcome="refused",code="CHECKSUM_MISMATCH"\} 1/,
    );
    expect(metrics).toMatch(/streamscore_model_swaps_total\{outcome="swapped"\} 1/);
    expect(metrics).toMatch(/streamscore_model_info\{[^}]*version="2"/);

    // An explicit reload tries it again: refused, with the file, and 2 still serves.
    const response = await fetch(`${url}/models/reload`, { method: 'POST' });
    expect(response.status).toBe(422);
    const body = (await response.json()) as ReloadResult;
    expect(body).toMatchObject({
      outcome: 'refused',
      current: '2',
      candidate: '3',
      error: { code: 'CHECKSUM_MISMATCH', file },
    });

    const producer = kafka.producer({ createPartitioner: Partitioners.DefaultPartitioner });
    await producer.connect();
    await producer.send({
      topic: topics.requests,
      messages: Array.from({ length: 20 }, (_, k) => ({ key: `z-${k}`, value: request(`r-${k}`) })),
    });
    await producer.disconnect();
    const results = await readAll(brokers, topics.results, { expected: 1e9, timeoutMs: 3000 });
    const last = results.filter((m) => m.key?.toString().startsWith('z-'));
    expect(last).toHaveLength(20);
    expect(last.every((m) => m.headers?.[HEADER.modelVersion]?.toString() === '2')).toBe(true);
    await service.stop();
  });

  it('20 swaps in a row leave tensors and RSS flat (in-thread model, replicas: 0)', async () => {
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as () => void;
    const { dir: repository, remove } = await tempDir('hot-swap-leak');
    cleanups.push(remove);
    await writeDigitsVersion(repository, '1');
    const topics = {
      requests: uniqueTopic('leak-requests'),
      results: uniqueTopic('leak-results'),
      deadLetter: uniqueTopic('leak-dlq'),
    };
    await createTopics(
      brokers,
      Object.values(topics).map((topic) => ({ topic, numPartitions: 1 })),
    );
    const config = loadConfig({
      env: {},
      overrides: {
        kafka: { brokers, groupId: uniqueTopic('leak-group') },
        topics: {
          requests: [topics.requests],
          results: topics.results,
          deadLetter: topics.deadLetter,
        },
        model: {
          repository,
          name: 'digits',
          version: 'latest',
          replicas: 0,
          backend: 'wasm',
          watch: false,
        },
        batching: { maxBatchSize: 8 },
        http: { port: 0 },
      },
    });
    const service = await startService(config, { log: silentLogger });
    services.push(service);
    const { tf } = await selectBackend('wasm', silentLogger);
    const url = service.http!.url;

    const measure = () => {
      gc();
      return { tensors: tf.memory().numTensors, rss: process.memoryUsage().rss };
    };
    // One swap first, so lazily created state (kernels, wasm heap growth) is in the baseline.
    await writeDigitsVersion(repository, '2');
    expect(
      ((await (await fetch(`${url}/models/reload`, { method: 'POST' })).json()) as ReloadResult)
        .outcome,
    ).toBe('swapped');
    await until('old version disposed', () => service.model.retiring === 0);
    const before = measure();
    const started = Date.now();
    for (let v = 3; v <= 22; v++) {
      await writeDigitsVersion(repository, String(v));
      const response = await fetch(`${url}/models/reload`, { method: 'POST' });
      const body = (await response.json()) as ReloadResult;
      expect(body).toMatchObject({ outcome: 'swapped', current: String(v) });
    }
    await until('old versions disposed', () => service.model.retiring === 0);
    const after = measure();
    const growthMb = (after.rss - before.rss) / 2 ** 20;
    console.log(
      `20 swaps in ${Date.now() - started} ms: tensors ${before.tensors} -> ${after.tensors}, ` +
        `RSS ${(before.rss / 2 ** 20).toFixed(0)} -> ${(after.rss / 2 ** 20).toFixed(0)} MB (${growthMb.toFixed(1)} MB)`,
    );
    expect(service.model.info.version).toBe('22');
    expect(after.tensors).toBe(before.tensors);
    expect(growthMb).toBeLessThan(100);
  });
});
