/**
 * Several models and versions in one worker, against the real broker: digits version 2 is the
 * default (model.version), version 1 is served side by side (model.versions) to requests that
 * name it, and digits-uint8 (model.additional) is the default of a second request topic
 * (model.byTopic). Requests naming an unknown model or version are dead-lettered with their own
 * codes while every other request is answered.
 */
import { cp } from 'node:fs/promises';
import path from 'node:path';
import { Partitioners } from 'kafkajs';
import { afterAll, describe, expect, it } from 'vitest';
import { inject } from 'vitest';
import { AvroCodec } from '../../src/codec/avro.js';
import { loadConfig } from '../../src/config/index.js';
import { loadDigitsDataset } from '../../src/model/digits-data.js';
import { startService, type Service } from '../../src/service.js';
import { silentLogger } from '../../src/telemetry/logger.js';
import { HEADER } from '../../src/worker/headers.js';
import { MODELS_ROOT, tempDir, writeDigitsVersion } from '../model/helpers.js';
import { freshTopics, readAll, testKafka, uniqueTopic } from './helpers/kafka.js';

const brokers = inject('kafkaBrokers');
const codec = new AvroCodec();

describe('several models and versions in one worker', () => {
  const services: Service[] = [];
  const cleanups: (() => Promise<void>)[] = [];
  afterAll(async () => {
    await Promise.all(services.map((s) => s.stop()));
    for (const c of cleanups) await c();
  });

  it('routes by topic, model name and version; unknown ones are dead-lettered with their codes', async () => {
    const repo = await tempDir('models');
    cleanups.push(repo.remove);
    await writeDigitsVersion(repo.dir, '1');
    await writeDigitsVersion(repo.dir, '2');
    await cp(path.join(MODELS_ROOT, 'digits-uint8'), path.join(repo.dir, 'digits-uint8'), {
      recursive: true,
    });
    const topics = await freshTopics(brokers, 'models', ['digits', 'small', 'results', 'dlq'], 2);
    const service = await startService(
      loadConfig({
        env: {},
        overrides: {
          kafka: { brokers, groupId: uniqueTopic('models-group') },
          topics: {
            requests: [topics.digits, topics.small],
            results: topics.results,
            deadLetter: topics.dlq,
          },
          model: {
            repository: repo.dir,
            name: 'digits',
            version: '2',
            versions: ['1'],
            additional: ['digits-uint8'],
            byTopic: [`${topics.small}=digits-uint8`],
            replicas: 0,
            backend: 'wasm',
          },
          batching: { maxBatchSize: 32, maxDelayMs: 5, autotune: false },
          http: { enabled: false },
        },
      }),
      { log: silentLogger },
    );
    services.push(service);

    const { heldOut } = loadDigitsDataset();
    // [topic, model, version, expected model@version or dead-letter code]
    const kinds: [string, string | null, string | null, string][] = [
      [topics.digits, null, null, 'digits@2'],
      [topics.digits, null, '1', 'digits@1'],
      [topics.digits, 'digits-uint8', null, 'digits-uint8@1'],
      [topics.small, null, null, 'digits-uint8@1'],
      [topics.small, 'digits', null, 'digits@2'],
      [topics.digits, 'no-such-model', null, 'UNKNOWN_MODEL'],
      [topics.small, null, '7', 'UNKNOWN_MODEL_VERSION'],
    ];
    const PER_KIND = 50;
    const producer = testKafka(brokers).producer({
      createPartitioner: Partitioners.DefaultPartitioner,
    });
    await producer.connect();
    const expected = new Map<string, string>();
    let correct = 0;
    for (const [k, [topic, model, version, outcome]] of kinds.entries()) {
      await producer.send({
        topic,
        messages: Array.from({ length: PER_KIND }, (_, i) => {
          const id = `m-${k}-${i}`;
          expected.set(id, outcome);
          return {
            key: id,
            value: codec.encodeRequest({
              id,
              model,
              modelVersion: version,
              requestedAt: Date.now(),
              inputs: [{ name: 'pixels', shape: [64], data: heldOut[i]!.pixels }],
            }),
          };
        }),
      });
    }
    await producer.disconnect();

    const answers = kinds.filter(([, , , o]) => o.includes('@')).length * PER_KIND;
    const results = await readAll(brokers, topics.results, {
      expected: answers,
      timeoutMs: 60_000,
    });
    const dead = await readAll(brokers, topics.dlq, {
      expected: kinds.length * PER_KIND - answers,
      timeoutMs: 30_000,
    });
    expect(results).toHaveLength(answers);
    for (const m of results) {
      const r = codec.decodeResult(m.value!);
      expect(`${r.model}@${r.modelVersion}`, r.id).toBe(expected.get(r.id));
      expect(m.headers?.[HEADER.model]?.toString()).toBe(r.model);
      const i = Number(r.id.split('-')[2]);
      if (r.label === String(heldOut[i]!.label)) correct++;
    }
    expect(dead).toHaveLength(kinds.length * PER_KIND - answers);
    for (const m of dead) {
      const id = m.key!.toString();
      expect(m.headers?.[HEADER.errorCode]?.toString(), id).toBe(expected.get(id));
    }
    // Every served model is a working digits classifier: the held-out accuracy stays ~98 %.
    expect(correct / answers).toBeGreaterThan(0.95);
    console.log(
      `[models] ${results.length} answered by digits@2, digits@1 and digits-uint8@1 as routed, ${dead.length} dead-lettered (UNKNOWN_MODEL, UNKNOWN_MODEL_VERSION); accuracy ${((correct / answers) * 100).toFixed(1)} %`,
    );
  });

  it('refuses to start when model.byTopic names a topic it does not read, naming the key', async () => {
    await expect(
      startService(
        loadConfig({
          env: {},
          overrides: {
            kafka: { brokers },
            topics: { requests: ['a'] },
            model: { byTopic: ['b=digits'] },
            http: { enabled: false },
          },
        }),
        { log: silentLogger },
      ),
    ).rejects.toThrow(/model\.byTopic "b=digits": b is not one of topics\.requests \(a\)/);
  });
});
