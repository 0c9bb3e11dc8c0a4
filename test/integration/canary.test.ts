/**
 * Canary by key hash against the real broker: model.version pinned to 1, model.canary version 2
 * at fraction 0.1. 2,000 requests over 500 keys (each key 4 times): every request answered once,
 * every key served by exactly one version, and the keys served by version 2 are exactly those the
 * hash routes to the canary. A canary version that is missing or corrupted stops the start.
 */
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { Partitioners } from 'kafkajs';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { AvroCodec } from '../../src/codec/avro.js';
import { loadConfig } from '../../src/config/index.js';
import { CanaryRouter } from '../../src/model/canary.js';
import { loadDigitsDataset } from '../../src/model/digits-data.js';
import { startService, type Service } from '../../src/service.js';
import { silentLogger } from '../../src/telemetry/logger.js';
import { HEADER } from '../../src/worker/headers.js';
import { tempDir, writeDigitsVersion } from '../model/helpers.js';
import { createTopics, readAll, testKafka, uniqueTopic } from './helpers/kafka.js';

const brokers = inject('kafkaBrokers');
const codec = new AvroCodec();
const KEYS = 500;
const PER_KEY = 4;
const FRACTION = 0.1;

/** <repository>/digits/1 and /2: the digits model twice, card.json saying each version. */
async function repositoryWithTwoVersions(): Promise<{ dir: string; remove: () => Promise<void> }> {
  const temp = await tempDir('canary');
  await writeDigitsVersion(temp.dir, '1');
  await writeDigitsVersion(temp.dir, '2');
  return temp;
}

function serviceConfig(repository: string, topics: Record<string, string>, canaryVersion: string) {
  return loadConfig({
    env: {},
    overrides: {
      kafka: { brokers, groupId: uniqueTopic('canary-group') },
      topics: { requests: [topics.requests!], results: topics.results!, deadLetter: topics.dlq! },
      model: {
        repository,
        name: 'digits',
        version: '1',
        replicas: 1,
        backend: 'wasm',
        canary: { version: canaryVersion, fraction: FRACTION },
      },
      batching: { maxBatchSize: 32, maxDelayMs: 5, autotune: false },
      commit: { intervalMs: 100 },
      http: { enabled: false },
    },
  });
}

describe('canary by key hash', () => {
  const kafka = testKafka(brokers);
  const { heldOut } = loadDigitsDataset();
  const services: Service[] = [];
  const cleanups: (() => Promise<void>)[] = [];

  afterAll(async () => {
    await Promise.all(services.map((s) => s.stop()));
    for (const c of cleanups) await c();
  });

  it('serves each key by one version, version 2 exactly for the keys the hash routes to it', async () => {
    const repo = await repositoryWithTwoVersions();
    cleanups.push(repo.remove);
    const topics = {
      requests: uniqueTopic('canary-requests'),
      results: uniqueTopic('canary-results'),
      dlq: uniqueTopic('canary-dlq'),
    };
    await createTopics(
      brokers,
      Object.values(topics).map((topic) => ({ topic, numPartitions: 4 })),
    );
    const service = await startService(serviceConfig(repo.dir, topics, '2'), {
      log: silentLogger,
    });
    services.push(service);

    const router = new CanaryRouter(FRACTION);
    const keys = Array.from({ length: KEYS }, (_, k) => `key-${k}`);
    const expectedCanary = new Set(
      keys.filter((k) => router.route(Buffer.from(k), '') === 'canary'),
    );

    const producer = kafka.producer({ createPartitioner: Partitioners.DefaultPartitioner });
    await producer.connect();
    const total = KEYS * PER_KEY;
    for (let round = 0; round < PER_KEY; round++) {
      await producer.send({
        topic: topics.requests,
        messages: keys.map((key, k) => {
          const id = `c-${round * KEYS + k}`;
          return {
            key,
            value: codec.encodeRequest({
              id,
              model: null,
              modelVersion: null,
              requestedAt: Date.now(),
              inputs: [{ name: 'pixels', shape: [64], data: heldOut[k % heldOut.length]!.pixels }],
            }),
          };
        }),
      });
    }
    await producer.disconnect();

    const results = await readAll(brokers, topics.results, { expected: total, timeoutMs: 90_000 });
    const ids = results.map((m) => codec.decodeResult(m.value!).id);
    expect(new Set(ids).size).toBe(total);
    expect(ids.length).toBe(total);

    const versionsOfKey = new Map<string, Set<string>>();
    for (const m of results) {
      const result = codec.decodeResult(m.value!);
      expect(m.headers?.[HEADER.modelVersion]?.toString()).toBe(result.modelVersion);
      const key = m.key!.toString();
      const set = versionsOfKey.get(key) ?? new Set<string>();
      set.add(result.modelVersion);
      versionsOfKey.set(key, set);
    }
    expect(versionsOfKey.size).toBe(KEYS);
    const mixed = [...versionsOfKey.values()].filter((s) => s.size !== 1).length;
    expect(mixed).toBe(0);
    const servedBy2 = new Set([...versionsOfKey].filter(([, s]) => s.has('2')).map(([key]) => key));
    const share = servedBy2.size / KEYS;
    console.log(
      `canary: ${servedBy2.size}/${KEYS} keys (${(share * 100).toFixed(1)} %) served by version 2, expected from the hash ${expectedCanary.size}; ${results.length} results for ${total} requests`,
    );
    expect(servedBy2.size).toBe(expectedCanary.size);
    expect([...servedBy2].sort()).toEqual([...expectedCanary].sort());
    // Tolerance: within 3 percentage points of the configured 10 %.
    expect(Math.abs(share - FRACTION)).toBeLessThanOrEqual(0.03);
  });

  it('refuses to start when the canary version is missing or does not load, naming the key and file', async () => {
    const repo = await repositoryWithTwoVersions();
    cleanups.push(repo.remove);
    const topics = {
      requests: uniqueTopic('canary-bad-requests'),
      results: uniqueTopic('canary-bad-results'),
      dlq: uniqueTopic('canary-bad-dlq'),
    };
    await createTopics(
      brokers,
      Object.values(topics).map((topic) => ({ topic, numPartitions: 1 })),
    );

    await expect(
      startService(serviceConfig(repo.dir, topics, '3'), { log: silentLogger }),
    ).rejects.toMatchObject({
      code: 'CONFIG_INVALID',
      message: expect.stringMatching(/model\.canary\.version "3".*no version 3/),
    });

    const weights = path.join(repo.dir, 'digits', '2', 'weights.bin');
    const bytes = await readFile(weights);
    bytes[100] = bytes[100]! ^ 0xff;
    await writeFile(weights, bytes);
    await expect(
      startService(serviceConfig(repo.dir, topics, '2'), { log: silentLogger }),
    ).rejects.toMatchObject({
      code: 'CONFIG_INVALID',
      message: expect.stringContaining(`model.canary.version "2": ${weights}`),
    });
  });
});
