/**
 * The local pipeline (`score --local`) against the service on the real broker and Schema
 * Registry: the same requests (raw Avro on one topic, Confluent-framed on another, some of them
 * bad) get the same answers: equal results (label, scores, version) and dead letters with the
 * same codes, one per request, in input order locally.
 */
import type avro from 'avsc';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { startLocalPipeline, type LocalOutcome } from '../../src/cli/local-pipeline.js';
import { AvroCodec } from '../../src/codec/avro.js';
import { ConfluentSchemaRegistry, frame } from '../../src/codec/registry.js';
import type { InferenceRequest } from '../../src/codec/types.js';
import { loadConfig } from '../../src/config/index.js';
import { loadDigitsDataset } from '../../src/model/digits-data.js';
import { startService, type Service } from '../../src/service.js';
import { silentLogger } from '../../src/telemetry/logger.js';
import { HEADER } from '../../src/worker/headers.js';
import { MODELS_ROOT } from '../model/helpers.js';
import { freshTopics, readAll, testKafka, uniqueTopic } from './helpers/kafka.js';

const brokers = inject('kafkaBrokers');
const registryUrl = inject('registryUrl');
const codec = new AvroCodec();
const PER_TOPIC = 200;
const TOLERANCE = 1e-5;

describe('local pipeline and service', () => {
  const services: Service[] = [];
  afterAll(async () => {
    await Promise.all(services.map((s) => s.stop()));
  });

  it('answer the same requests the same way', async () => {
    const topics = await freshTopics(brokers, 'local', ['raw', 'framed', 'results', 'dlq'], 2);
    const config = loadConfig({
      env: {},
      overrides: {
        kafka: { brokers, groupId: uniqueTopic('local-group') },
        topics: {
          requests: [topics.raw, topics.framed],
          results: topics.results,
          deadLetter: topics.dlq,
        },
        registry: { url: registryUrl, framed: [topics.framed] },
        model: {
          repository: MODELS_ROOT,
          name: 'digits',
          version: '1',
          replicas: 0,
          backend: 'wasm',
        },
        batching: { maxBatchSize: 32, maxDelayMs: 5, autotune: false },
        http: { enabled: false },
        log: { level: 'silent' },
      },
    });
    const registry = new ConfluentSchemaRegistry({ url: registryUrl });
    const schemaId = await registry.register(
      `${topics.framed}-value`,
      codec.types.request.schema() as avro.Schema,
    );

    const { heldOut } = loadDigitsDataset();
    /** Request i: every 10th is broken in a different way, the rest are valid. */
    const requests = [topics.raw, topics.framed].flatMap((topic, t) =>
      Array.from({ length: PER_TOPIC }, (_, i) => {
        const id = `${t}-${i}`;
        const request: InferenceRequest = {
          id,
          model: null,
          modelVersion: null,
          requestedAt: null,
          inputs: [{ name: 'pixels', shape: [64], data: heldOut[i % heldOut.length]!.pixels }],
        };
        let payload = codec.encodeRequest(request);
        if (i % 10 === 3) payload = payload.subarray(0, 20);
        if (i % 10 === 6) payload = codec.encodeRequest({ ...request, model: 'nope' });
        if (i % 10 === 9) payload = codec.encodeRequest({ ...request, modelVersion: '5' });
        const value = topic === topics.framed ? frame(schemaId, payload) : payload;
        return { topic, key: Buffer.from(id), value };
      }),
    );

    const service = await startService(config, { log: silentLogger });
    services.push(service);
    const producer = testKafka(brokers).producer();
    await producer.connect();
    for (const topic of [topics.raw, topics.framed]) {
      await producer.send({
        topic,
        messages: requests
          .filter((r) => r.topic === topic)
          .map(({ key, value }) => ({ key, value })),
      });
    }
    await producer.disconnect();
    const broken = requests.filter((_, i) => [3, 6, 9].includes(i % 10)).length;
    const results = await readAll(brokers, topics.results, {
      expected: requests.length - broken,
      timeoutMs: 60_000,
    });
    const letters = await readAll(brokers, topics.dlq, { expected: broken, timeoutMs: 30_000 });
    const fromService = new Map<string, LocalOutcome>();
    for (const m of [...results, ...letters]) {
      const headers = Object.fromEntries(
        Object.entries(m.headers ?? {}).map(([k, v]) => [k, String(v)]),
      );
      const code = headers[HEADER.errorCode];
      fromService.set(
        m.key!.toString(),
        code === undefined
          ? { kind: 'result', value: m.value!, headers }
          : { kind: 'deadLetter', code, message: headers[HEADER.errorMessage]!, headers },
      );
    }
    expect(fromService.size).toBe(requests.length);

    const local = await startLocalPipeline(config, { log: silentLogger });
    let outcomes: LocalOutcome[];
    try {
      outcomes = await local.score(requests);
    } finally {
      await local.close();
    }

    expect(outcomes).toHaveLength(requests.length);
    const codes = new Set<string>();
    outcomes.forEach((mine, i) => {
      const key = requests[i]!.key.toString();
      const theirs = fromService.get(key)!;
      expect(mine.kind, key).toBe(theirs.kind);
      if (mine.kind === 'deadLetter' && theirs.kind === 'deadLetter') {
        expect(mine.code, key).toBe(theirs.code);
        expect(mine.message, key).toBe(theirs.message);
        codes.add(mine.code);
      }
      if (mine.kind === 'result' && theirs.kind === 'result') {
        const a = codec.decodeResult(mine.value);
        const b = codec.decodeResult(theirs.value);
        expect(a.id).toBe(key);
        expect([a.id, a.label, a.labelIndex, a.model, a.modelVersion]).toEqual([
          b.id,
          b.label,
          b.labelIndex,
          b.model,
          b.modelVersion,
        ]);
        const diff = a.outputs[0]!.data.some(
          (v, k) => Math.abs(v - b.outputs[0]!.data[k]!) > TOLERANCE,
        );
        expect(diff, key).toBe(false);
        expect(String(mine.headers[HEADER.correlationId])).toBe(key);
      }
    });
    expect([...codes].sort()).toEqual(['DECODE_FAILED', 'UNKNOWN_MODEL', 'UNKNOWN_MODEL_VERSION']);
  });
});
