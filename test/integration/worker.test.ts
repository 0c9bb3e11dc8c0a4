/**
 * The walking skeleton end to end against the real broker: Avro requests on a 4-partition topic,
 * the worker as users start it (startService with a config object), results and dead letters
 * read back with an independent consumer.
 */
import { randomBytes } from 'node:crypto';
import { Partitioners, type Kafka } from 'kafkajs';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { AvroCodec } from '../../src/codec/avro.js';
import { loadConfig, type StreamscoreConfig } from '../../src/config/index.js';
import { selectBackend } from '../../src/model/backend.js';
import { loadDigitsDataset, type Sample } from '../../src/model/digits-data.js';
import { loadModel } from '../../src/model/repository.js';
import { startService, type Service } from '../../src/service.js';
import { silentLogger } from '../../src/telemetry/logger.js';
import { HEADER } from '../../src/worker/headers.js';
import { DIGITS_DIR } from '../model/helpers.js';
import {
  readAll,
  testKafka,
  uniqueTopic,
  createWorkerTopics,
  type WorkerTopics,
} from './helpers/kafka.js';

const brokers = inject('kafkaBrokers');
const codec = new AvroCodec();
const TOTAL = 2000;
const PARTITIONS = 4;
const TOLERANCE = 1e-5;

type Topics = WorkerTopics;

async function makeTopics(name: string): Promise<Topics> {
  return createWorkerTopics(brokers, name, PARTITIONS);
}

function serviceConfig(
  topics: Topics,
  delivery: StreamscoreConfig['delivery']['mode'] = 'at-least-once',
): StreamscoreConfig {
  return loadConfig({
    env: {},
    overrides: {
      kafka: { brokers, groupId: uniqueTopic('worker-group') },
      topics: {
        requests: [topics.requests],
        results: topics.results,
        deadLetter: topics.deadLetter,
      },
      model: { name: 'digits', version: '1' },
      commit: { intervalMs: 100 },
      delivery: { mode: delivery },
      log: { level: 'silent' },
      // Several services run at once in this process: any free port for each HTTP server.
      http: { port: 0 },
    },
  });
}

/** The i-th request cycles through the held-out digits; its id says which sample it carries. */
const sampleFor = (heldOut: Sample[], i: number) => heldOut[i % heldOut.length]!;

async function produce(kafka: Kafka, topic: string, values: { key: string; value: Buffer }[]) {
  const producer = kafka.producer({ createPartitioner: Partitioners.DefaultPartitioner });
  await producer.connect();
  for (let i = 0; i < values.length; i += 250) {
    await producer.send({ topic, messages: values.slice(i, i + 250) });
  }
  await producer.disconnect();
}

async function endOffsets(kafka: Kafka, topic: string): Promise<number> {
  const admin = kafka.admin();
  await admin.connect();
  try {
    const offsets = await admin.fetchTopicOffsets(topic);
    return offsets.reduce((sum, p) => sum + Number(p.high), 0);
  } finally {
    await admin.disconnect();
  }
}

async function committedOffsets(kafka: Kafka, groupId: string, topic: string) {
  const admin = kafka.admin();
  await admin.connect();
  try {
    const [committed] = await admin.fetchOffsets({ groupId, topics: [topic] });
    const ends = await admin.fetchTopicOffsets(topic);
    return committed!.partitions.map((p) => ({
      partition: p.partition,
      committed: p.offset,
      end: ends.find((e) => e.partition === p.partition)!.high,
    }));
  } finally {
    await admin.disconnect();
  }
}

describe('worker against a real broker', () => {
  const kafka = testKafka(brokers);
  const { heldOut } = loadDigitsDataset();
  /** Offline predictions of the same model on every held-out sample, by sample id. */
  const offline = new Map<string, Float32Array>();
  const services: Service[] = [];

  beforeAll(async () => {
    const { tf, backend } = await selectBackend('wasm', silentLogger);
    const model = await loadModel(DIGITS_DIR, { tf, backend, log: silentLogger });
    const pixels = new Float32Array(heldOut.length * 64);
    heldOut.forEach((s, i) => pixels.set(s.pixels, i * 64));
    const { probabilities } = await model.predict({ size: heldOut.length, inputs: { pixels } });
    heldOut.forEach((s, i) => offline.set(s.id, probabilities!.slice(i * 10, (i + 1) * 10)));
    await model.dispose();
  });

  afterAll(async () => {
    await Promise.all(services.map((s) => s.stop()));
  });

  it('answers 2,000 requests over 4 partitions exactly once, matching offline predict', async () => {
    const topics = await makeTopics('e2e');
    const config = serviceConfig(topics);
    const service = await startService(config, { log: silentLogger });
    services.push(service);

    const requests = Array.from({ length: TOTAL }, (_, i) => {
      const sample = sampleFor(heldOut, i);
      return {
        key: `r-${i}`,
        value: codec.encodeRequest(
          {
            id: `r-${i}`,
            model: null,
            modelVersion: null,
            requestedAt: Date.now(),
            inputs: [{ name: 'pixels', shape: [64], data: sample.pixels }],
          },
          // Both float encodings travel through the worker.
          i % 2 === 0 ? 'bytes' : 'array',
        ),
      };
    });
    await produce(kafka, topics.requests, requests);

    const results = await readAll(brokers, topics.results, { expected: TOTAL, timeoutMs: 120_000 });
    const report = await service.stop();
    expect(report).toEqual({ unanswered: 0, drained: true });

    const ids = results.map((m) => codec.decodeResult(m.value!).id);
    expect(new Set(ids).size).toBe(TOTAL);
    expect(await endOffsets(kafka, topics.results)).toBe(TOTAL); // nothing beyond what was read
    expect(await endOffsets(kafka, topics.deadLetter)).toBe(0);

    let mismatches = 0;
    for (const message of results) {
      const result = codec.decodeResult(message.value!);
      const i = Number(result.id.slice(2));
      const expected = offline.get(sampleFor(heldOut, i).id)!;
      const got = result.outputs[0]!.data;
      if (got.some((v, k) => Math.abs(v - expected[k]!) > TOLERANCE)) mismatches++;
      expect(message.key?.toString()).toBe(result.id);
      expect(message.headers?.[HEADER.correlationId]?.toString()).toBe(result.id);
      expect(message.headers?.[HEADER.modelVersion]?.toString()).toBe('1');
      expect(result.label).toBe(String(expected.indexOf(Math.max(...expected))));
    }
    expect(mismatches).toBe(0);

    // Every request offset is committed, so a restart reads nothing again.
    for (const p of await committedOffsets(kafka, config.kafka.groupId, topics.requests)) {
      expect(p.committed).toBe(p.end);
    }
  });

  it('dead-letters exactly the corrupted 1 % and answers all the others', async () => {
    const topics = await makeTopics('corrupt');
    const service = await startService(serviceConfig(topics), { log: silentLogger });
    services.push(service);

    const corrupted = new Set<string>();
    const requests = Array.from({ length: TOTAL }, (_, i) => {
      const id = `c-${i}`;
      const value = codec.encodeRequest({
        id,
        model: null,
        modelVersion: null,
        requestedAt: Date.now(),
        inputs: [{ name: 'pixels', shape: [64], data: sampleFor(heldOut, i).pixels }],
      });
      if (i % 100 !== 37) return { key: id, value };
      corrupted.add(id);
      // Alternate the ways a payload goes bad on the wire: random bytes and truncation.
      return { key: id, value: i % 200 === 37 ? randomBytes(value.length) : value.subarray(0, 40) };
    });
    expect(corrupted.size).toBe(TOTAL / 100);
    await produce(kafka, topics.requests, requests);

    const results = await readAll(brokers, topics.results, {
      expected: TOTAL - corrupted.size,
      timeoutMs: 120_000,
    });
    const letters = await readAll(brokers, topics.deadLetter, {
      expected: corrupted.size,
      timeoutMs: 30_000,
    });
    await service.stop();

    const answered = new Set(results.map((m) => codec.decodeResult(m.value!).id));
    expect(answered.size).toBe(TOTAL - corrupted.size);
    for (const id of corrupted) expect(answered.has(id)).toBe(false);
    expect(await endOffsets(kafka, topics.results)).toBe(TOTAL - corrupted.size);

    expect(new Set(letters.map((m) => m.key!.toString()))).toEqual(corrupted);
    expect(await endOffsets(kafka, topics.deadLetter)).toBe(corrupted.size);
    const original = new Map(requests.map((r) => [r.key, r.value]));
    for (const letter of letters) {
      const headers = letter.headers!;
      expect(['DECODE_FAILED', 'WRONG_SHAPE']).toContain(headers[HEADER.errorCode]!.toString());
      expect(headers[HEADER.errorCategory]!.toString()).toBe('unprocessable');
      expect(headers[HEADER.sourceTopic]!.toString()).toBe(topics.requests);
      expect(Number(headers[HEADER.sourceOffset]!.toString())).toBeGreaterThanOrEqual(0);
      // The dead letter carries the original bytes, so it can be inspected and replayed.
      expect(Buffer.compare(letter.value!, original.get(letter.key!.toString())!)).toBe(0);
    }
  });

  it('exactly-once: read_committed sees each answer once and the offsets committed with them', async () => {
    const topics = await makeTopics('eos');
    const config = serviceConfig(topics, 'exactly-once');
    const service = await startService(config, { log: silentLogger });
    services.push(service);

    const corrupted = new Set<string>();
    const requests = Array.from({ length: TOTAL }, (_, i) => {
      const id = `x-${i}`;
      const value = codec.encodeRequest({
        id,
        model: null,
        modelVersion: null,
        requestedAt: Date.now(),
        inputs: [{ name: 'pixels', shape: [64], data: sampleFor(heldOut, i).pixels }],
      });
      if (i % 50 !== 7) return { key: id, value };
      corrupted.add(id);
      return { key: id, value: value.subarray(0, 30) };
    });
    await produce(kafka, topics.requests, requests);

    const results = await readAll(brokers, topics.results, {
      expected: TOTAL - corrupted.size,
      timeoutMs: 120_000,
    });
    const letters = await readAll(brokers, topics.deadLetter, {
      expected: corrupted.size,
      timeoutMs: 30_000,
    });
    const report = await service.stop();
    expect(report).toEqual({ unanswered: 0, drained: true });

    const ids = results.map((m) => codec.decodeResult(m.value!).id);
    expect(ids.length).toBe(TOTAL - corrupted.size);
    expect(new Set(ids).size).toBe(ids.length);
    for (const id of ids) expect(corrupted.has(id)).toBe(false);
    expect(new Set(letters.map((m) => m.key!.toString()))).toEqual(corrupted);
    expect(letters.length).toBe(corrupted.size);
    // Nothing visible to read_committed beyond what was read (aborted records would be skipped
    // silently, so this reads uncommitted too: every produced record was committed).
    const uncommitted = await readAll(brokers, topics.results, {
      expected: TOTAL,
      timeoutMs: 3_000,
      isolationLevel: 'read_uncommitted',
    });
    expect(uncommitted.length).toBe(TOTAL - corrupted.size);
    for (const p of await committedOffsets(kafka, config.kafka.groupId, topics.requests)) {
      expect(p.committed).toBe(p.end);
    }
  });
});
