/**
 * A candidate on trial against the real broker: model.version 1 answers, version 2 is the
 * candidate (canary 10 % of keys, shadow 50 % of the rest). Version 2 is the digits model with its
 * output columns rotated (it says 3 where version 1 says 2): a valid version (checksums match)
 * that disagrees. The judge rolls it back automatically; the test reads the rollback event from
 * topics.events and the metric from /metrics, and checks every request was answered exactly once
 * and that the candidate's shadow results went to topics.shadow only.
 */
import { Partitioners } from 'kafkajs';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { AvroCodec } from '../../src/codec/avro.js';
import { loadConfig } from '../../src/config/index.js';
import { loadDigitsDataset } from '../../src/model/digits-data.js';
import type { RolloutEvent } from '../../src/model/rollout.js';
import { modelsEndTrial } from '../../src/cli/models.js';
import { startService, type Service } from '../../src/service.js';
import { silentLogger } from '../../src/telemetry/logger.js';
import { tempDir, writeDigitsVersion } from '../model/helpers.js';
import { freshTopics, readAll, testKafka, uniqueTopic } from './helpers/kafka.js';

const brokers = inject('kafkaBrokers');
const codec = new AvroCodec();
const REQUESTS = 1500;
const KEYS = 500;

/** Byte offset of probabilities/kernel [64, 10] in weights.bin: after hidden/kernel and bias. */
const OUTPUT_KERNEL = (64 * 64 + 64) * 4;

/** Rotates the 10 output columns (kernel and bias) by one: label k's score goes to k + 1. */
function rotateOutputs(weights: Buffer): void {
  const floats = new Float32Array(weights.buffer, weights.byteOffset, weights.length / 4);
  const rotate = (start: number) => {
    const row = floats.slice(start, start + 10);
    for (let j = 0; j < 10; j++) floats[start + ((j + 1) % 10)] = row[j]!;
  };
  for (let r = 0; r < 64; r++) rotate(OUTPUT_KERNEL / 4 + r * 10);
  rotate(OUTPUT_KERNEL / 4 + 640);
}

/** A worker serving digits 1 from `repository` with `canary` on trial, HTTP on a free port. */
async function startTrial(
  repository: string,
  topics: { requests: string; results: string; dlq: string; shadow?: string; events: string },
  canary: Record<string, unknown>,
): Promise<Service> {
  const config = loadConfig({
    env: {},
    overrides: {
      kafka: { brokers, groupId: uniqueTopic('rollout-group') },
      topics: {
        requests: [topics.requests],
        results: topics.results,
        deadLetter: topics.dlq,
        shadow: topics.shadow ?? null,
        events: topics.events,
      },
      model: { repository, name: 'digits', version: '1', replicas: 1, backend: 'wasm', canary },
      batching: { maxBatchSize: 32, maxDelayMs: 5, autotune: false },
      commit: { intervalMs: 100 },
      http: { enabled: true, host: '127.0.0.1', port: 0 },
    },
  });
  return startService(config, { log: silentLogger });
}

describe('rollout: automatic rollback of a candidate that disagrees', () => {
  const services: Service[] = [];
  const cleanups: (() => Promise<void>)[] = [];

  afterAll(async () => {
    await Promise.all(services.map((s) => s.stop()));
    for (const c of cleanups) await c();
  });

  it('rolls the candidate back on agreement, writes the event and counts it; every request answered once', async () => {
    const repo = await tempDir('rollout');
    cleanups.push(repo.remove);
    await writeDigitsVersion(repo.dir, '1');
    await writeDigitsVersion(repo.dir, '2', rotateOutputs, true);
    const topics = await freshTopics(
      brokers,
      'rollout',
      ['requests', 'results', 'dlq', 'shadow', 'events'],
      2,
    );
    const service = await startTrial(repo.dir, topics, {
      version: '2',
      fraction: 0.1,
      shadow: 0.5,
      rollback: { minAgreement: 0.9, minRequests: 100, maxLatencyRatio: null },
    });
    services.push(service);

    const { heldOut } = loadDigitsDataset();
    const producer = testKafka(brokers).producer({
      createPartitioner: Partitioners.DefaultPartitioner,
    });
    await producer.connect();
    await producer.send({
      topic: topics.requests,
      messages: Array.from({ length: REQUESTS }, (_, i) => ({
        key: `key-${i % KEYS}`,
        value: codec.encodeRequest({
          id: `r-${i}`,
          model: null,
          modelVersion: null,
          requestedAt: Date.now(),
          inputs: [{ name: 'pixels', shape: [64], data: heldOut[i % heldOut.length]!.pixels }],
        }),
      })),
    });
    await producer.disconnect();

    const results = await readAll(brokers, topics.results, {
      expected: REQUESTS,
      timeoutMs: 90_000,
    });
    const decoded = results.map((m) => codec.decodeResult(m.value!));
    expect(new Set(decoded.map((r) => r.id)).size).toBe(REQUESTS);
    expect(decoded).toHaveLength(REQUESTS);

    // The event: one rollback, for disagreement, read from the events topic.
    // Asks for 2 so that a second event would show; waits out 10 s for it.
    const [eventMessage, ...more] = await readAll(brokers, topics.events, {
      expected: 2,
      timeoutMs: 10_000,
    });
    expect(eventMessage).toBeDefined();
    expect(more).toHaveLength(0);
    const event = JSON.parse(eventMessage!.value!.toString()) as RolloutEvent;
    console.log(`[rollout] event: ${eventMessage!.value!.toString()}`);
    expect(event).toMatchObject({
      type: 'rollback',
      reason: 'agreement',
      model: 'digits',
      version: '2',
      stableVersion: '1',
      by: 'judge',
    });
    expect(event.stats.compared).toBeGreaterThanOrEqual(100);
    expect(event.stats.agreement).toBeLessThan(0.9);
    expect(service.rollout?.state).toBe('rolled-back');

    // The metric, from /metrics.
    const metrics = await (await fetch(`${service.http!.url}/metrics`)).text();
    const rollbacks = metrics
      .split('\n')
      .find(
        (l) =>
          l.startsWith('streamscore_rollout_events_total{') &&
          l.includes('type="rollback"') &&
          l.includes('reason="agreement"') &&
          l.includes('version="2"'),
      );
    expect(rollbacks, metrics.slice(0, 2000)).toMatch(/ 1$/);
    expect(metrics).toMatch(/streamscore_rollout_compared_total\{agree="false"\} [1-9]/);

    // Results after the rollback came from version 1 only; the candidate's shadow results went to
    // the shadow topic, never to the results.
    const rolledBackAt = Date.parse(event.at);
    const late = decoded.filter((r) => r.inferredAt > rolledBackAt + 50);
    expect(late.every((r) => r.modelVersion === '1')).toBe(true);
    const { shadowSent, shadowFailed } = service.worker.metrics.snapshot;
    expect(shadowSent).toBeGreaterThan(0);
    expect(shadowFailed).toBe(0);
    const shadow = await readAll(brokers, topics.shadow, {
      expected: shadowSent,
      timeoutMs: 20_000,
    });
    expect(shadow).toHaveLength(shadowSent);
    expect(shadow.every((m) => codec.decodeResult(m.value!).modelVersion === '2')).toBe(true);
    const v2Answers = decoded.filter((r) => r.modelVersion === '2');
    console.log(
      `[rollout] rolled back after ${event.stats.candidateRequests} candidate requests (${event.stats.compared} compared, agreement ${((event.stats.agreement ?? 0) * 100).toFixed(1)} %); ${v2Answers.length} of ${REQUESTS} answered by version 2 before it; ${late.length} answered after, all by version 1; ${shadow.length} shadow results`,
    );
  });

  it('promotes by hand through `streamscore models promote`: version 2 then answers every key; a second promote is refused', async () => {
    const repo = await tempDir('promote');
    cleanups.push(repo.remove);
    await writeDigitsVersion(repo.dir, '1');
    await writeDigitsVersion(repo.dir, '2');
    const topics = await freshTopics(
      brokers,
      'promote',
      ['requests', 'results', 'dlq', 'events'],
      2,
    );
    const service = await startTrial(repo.dir, topics, {
      version: '2',
      fraction: 0.1,
      rollback: null,
    });
    services.push(service);
    const { heldOut } = loadDigitsDataset();
    const producer = testKafka(brokers).producer({
      createPartitioner: Partitioners.DefaultPartitioner,
    });
    await producer.connect();
    const send = (from: number, count: number) =>
      producer.send({
        topic: topics.requests,
        messages: Array.from({ length: count }, (_, k) => ({
          key: `key-${(from + k) % 100}`,
          value: codec.encodeRequest({
            id: `p-${from + k}`,
            model: null,
            modelVersion: null,
            requestedAt: Date.now(),
            inputs: [{ name: 'pixels', shape: [64], data: heldOut[k % heldOut.length]!.pixels }],
          }),
        })),
      });
    await send(0, 200);
    const before = await readAll(brokers, topics.results, { expected: 200, timeoutMs: 60_000 });
    const versionsBefore = new Set(before.map((m) => codec.decodeResult(m.value!).modelVersion));
    expect(versionsBefore).toEqual(new Set(['1', '2']));

    const out: string[] = [];
    const io = { stdout: (t: string) => out.push(t), stderr: (t: string) => out.push(t) };
    expect(await modelsEndTrial('promote', { url: service.http!.url }, io)).toBe(0);
    expect(out.join('')).toMatch(/^promoted: digits 2 now serves every key \(was 1\)/);
    expect(await modelsEndTrial('rollback', { url: service.http!.url }, io)).toBe(1);
    expect(out.join('')).toMatch(/answered 409: no candidate on trial: 2 was already promoted/);

    await send(200, 200);
    await producer.disconnect();
    const all = await readAll(brokers, topics.results, { expected: 400, timeoutMs: 60_000 });
    const after = all
      .map((m) => codec.decodeResult(m.value!))
      .filter((r) => Number(r.id.slice(2)) >= 200);
    expect(after).toHaveLength(200);
    expect(after.every((r) => r.modelVersion === '2')).toBe(true);
    expect(service.model.info.version).toBe('2');
    const [event] = await readAll(brokers, topics.events, { expected: 1, timeoutMs: 20_000 });
    expect(JSON.parse(event!.value!.toString())).toMatchObject({
      type: 'promotion',
      reason: 'manual',
      by: 'http',
      version: '2',
      stableVersion: '1',
    });
  });
});
