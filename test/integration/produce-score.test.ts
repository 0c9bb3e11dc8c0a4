/**
 * `streamscore produce` and `streamscore score` (Kafka mode) in-process against the real broker
 * and a real worker serving the digits model and, on a mapped topic, the fraud model on payments.
 */
import path from 'node:path';
import { readFile, writeFile } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { BatchIo } from '../../src/cli/batch-io.js';
import { runProduce } from '../../src/cli/produce.js';
import { runScore } from '../../src/cli/score.js';
import { AvroCodec } from '../../src/codec/avro.js';
import { clientCodecFor } from '../../src/codec/topics.js';
import { loadConfig, type StreamscoreConfig } from '../../src/config/index.js';
import { startService, type Service } from '../../src/service.js';
import { silentLogger } from '../../src/telemetry/logger.js';
import { REPO_ROOT, tempDir } from '../model/helpers.js';
import { freshTopics, readAll, uniqueTopic } from './helpers/kafka.js';

const brokers = inject('kafkaBrokers');
const PAYMENTS = path.join(REPO_ROOT, 'data/payments/payments.jsonl');

describe('produce and score through Kafka', () => {
  let topics: Record<'digits' | 'payments' | 'scores' | 'results' | 'dlq' | 'idle', string>;
  let config: StreamscoreConfig;
  let env: Record<string, string>;
  let service: Service;
  let dir: string;
  let remove: () => Promise<void>;

  beforeAll(async () => {
    ({ dir, remove } = await tempDir('produce-score'));
    topics = await freshTopics(
      brokers,
      'produce-score',
      ['digits', 'payments', 'scores', 'results', 'dlq', 'idle'],
      3,
    );
    // The same configuration for the worker and the commands, as files and variables would give.
    env = {
      STREAMSCORE_KAFKA_BROKERS: brokers.join(','),
      STREAMSCORE_TOPICS_REQUESTS: `${topics.digits},${topics.payments}`,
      STREAMSCORE_TOPICS_RESULTS: topics.results,
      STREAMSCORE_TOPICS_DEAD_LETTER: topics.dlq,
      STREAMSCORE_MODEL_VERSION: '1',
      STREAMSCORE_MODEL_ADDITIONAL: 'fraud@1',
      STREAMSCORE_MAPPINGS_BY_TOPIC: JSON.stringify([
        {
          topic: topics.payments,
          schema: 'schemas/examples/payment.avsc',
          id: 'paymentId',
          model: 'fraud',
          result: {
            topic: topics.scores,
            fields: [
              { name: 'decision', kind: 'label' },
              { name: 'fraudScore', kind: 'score', label: 'fraud' },
            ],
            copy: ['amount'],
          },
        },
      ]),
    };
    config = loadConfig({
      env: {
        ...env,
        STREAMSCORE_KAFKA_GROUP_ID: uniqueTopic('produce-score-worker'),
        STREAMSCORE_MODEL_REPLICAS: '1',
        STREAMSCORE_LOG_LEVEL: 'silent',
        STREAMSCORE_HTTP_PORT: '0',
      },
    });
    service = await startService(config, { log: silentLogger });
  });

  afterAll(async () => {
    await service?.stop();
    await remove?.();
  });

  function io(extraEnv: Record<string, string> = {}) {
    const written = { stdout: '', stderr: '' };
    const value: BatchIo = {
      stdout: (text) => (written.stdout += text),
      stderr: (text) => (written.stderr += text),
      isTTY: false,
      env: { ...env, ...extraEnv },
    };
    return { io: value, written };
  }

  it('produce --generate: requests from the digits card, each answered by the worker', async () => {
    const { io: run, written } = io();
    const code = await runProduce(
      { topic: topics.digits, generate: 400, rate: 2000, seed: 5, logLevel: 'silent' },
      run,
    );
    expect(code, written.stderr).toBe(0);
    expect(written.stdout).toMatch(/^sent 400 of 400 requests to .* asked for 2000\/s\); key: id/);
    const codec = new AvroCodec();
    const requests = await readAll(brokers, topics.digits, { expected: 400 });
    expect(requests).toHaveLength(400);
    for (const m of requests) {
      const request = codec.decodeRequest(m.value!);
      expect(m.key!.toString()).toBe(request.id);
      expect(request.inputs[0]!.shape).toEqual([64]);
    }
    const results = await readAll(brokers, topics.results, { expected: 400, timeoutMs: 60_000 });
    expect(results).toHaveLength(400);
  });

  it('produce --file: payments keyed by --key-field, scored by the fraud model', async () => {
    const { io: run, written } = io();
    const code = await runProduce(
      { topic: topics.payments, file: PAYMENTS, keyField: 'country', logLevel: 'silent' },
      run,
    );
    expect(code, written.stderr).toBe(0);
    expect(written.stdout).toMatch(/^sent 1000 of 1000 requests .*; key: country/);
    const sent = await readAll(brokers, topics.payments, { expected: 1000 });
    const codec = await clientCodecFor(config, topics.payments);
    for (const m of sent) {
      const payment = codec.requestType.fromBuffer(m.value!) as { country: string };
      expect(m.key!.toString()).toBe(payment.country);
    }
    const scores = await readAll(brokers, topics.scores, { expected: 1000, timeoutMs: 60_000 });
    expect(scores).toHaveLength(1000);
  });

  it('score (Kafka): payments in, one score line per payment in input order', async () => {
    const input = path.join(dir, 'payments.jsonl');
    const lines = (await readFile(PAYMENTS, 'utf8')).trimEnd().split('\n').slice(0, 300);
    await writeFile(input, lines.join('\n') + '\n');
    const out = path.join(dir, 'payments.scores.jsonl');
    const { io: run, written } = io();
    const code = await runScore(
      input,
      { topic: topics.payments, out, timeout: 60_000, logLevel: 'silent' },
      run,
    );
    expect(code, written.stderr).toBe(0);
    const ids = lines.map((l) => (JSON.parse(l) as { paymentId: string }).paymentId);
    const scored = (await readFile(out, 'utf8'))
      .trimEnd()
      .split('\n')
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(scored.map((s) => s['paymentId'])).toEqual(ids);
    for (const s of scored) {
      expect(['legit', 'fraud']).toContain(s['decision']);
      expect(s['fraudScore']).toBeGreaterThanOrEqual(0);
      expect(s['fraudScore']).toBeLessThanOrEqual(1);
    }
    const codec = await clientCodecFor(config, topics.payments);
    expect(codec.resultTopic).toBe(topics.scores);
    expect(written.stdout).toMatch(/scored 300 records .*: 300 results, 0 dead letters/);
  });

  it('score (Kafka): stops at the first request without an answer; the output stays resumable', async () => {
    const input = path.join(dir, 'idle.jsonl');
    const request = { inputs: [{ name: 'pixels', shape: [64], data: new Array(64).fill(0.5) }] };
    await writeFile(input, `${JSON.stringify(request)}\n`.repeat(5));
    const out = path.join(dir, 'idle.scores.jsonl');
    // The command knows a topic the worker does not read: nobody answers it.
    const { io: run, written } = io({
      STREAMSCORE_TOPICS_REQUESTS: `${topics.digits},${topics.payments},${topics.idle}`,
    });
    const code = await runScore(
      input,
      { topic: topics.idle, out, timeout: 1000, logLevel: 'silent' },
      run,
    );
    expect(code).toBe(1);
    expect(written.stderr).toContain('streamscore: TIMEOUT: no answer to request idle.jsonl:0');
    expect(written.stderr).toContain(
      `${out} has 0 of 5 lines; run the same command again to resume`,
    );
    expect(await readFile(out, 'utf8')).toBe('');
  });
});
