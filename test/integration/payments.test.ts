/**
 * Domain records through a real Schema Registry (Apicurio, Confluent API) and the real broker:
 * payments (schemas/examples/payment.avsc) are mapped field by field to the fraud model's input,
 * requests and results are Confluent-framed, and the results are PaymentScore records.
 *
 * - Schema evolution: under BACKWARD compatibility the producer adds an optional field, then
 *   drops one; the same worker, never restarted, answers every record of all three versions.
 * - Interop: a Python producer (confluent-kafka's AvroSerializer) writes payments, the worker
 *   answers, and a Python consumer (AvroDeserializer) reads the scores through the registry.
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { readFileSync } from 'node:fs';
import { SchemaRegistry, SchemaType } from '@kafkajs/confluent-schema-registry';
import { Partitioners } from 'kafkajs';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { loadConfig } from '../../src/config/index.js';
import { generatePayments, type LabelledPayment } from '../../src/model/payments-data.js';
import { startService, type Service } from '../../src/service.js';
import { silentLogger } from '../../src/telemetry/logger.js';
import { freshTopics, readAll, testKafka, uniqueTopic } from './helpers/kafka.js';

const execFileAsync = promisify(execFile);
const brokers = inject('kafkaBrokers');
const registryUrl = inject('registryUrl');
const PYTHON = path.resolve('.cache/pyenv/bin/python');

const PAYMENT = JSON.parse(readFileSync('schemas/examples/payment.avsc', 'utf8')) as {
  fields: { name: string }[];
} & Record<string, unknown>;
/** v2: an optional field added. v3: v2 with `channel` dropped. Both BACKWARD-compatible. */
const PAYMENT_V2 = {
  ...PAYMENT,
  fields: [...PAYMENT.fields, { name: 'deviceId', type: ['null', 'string'], default: null }],
};
const PAYMENT_V3 = {
  ...PAYMENT_V2,
  fields: PAYMENT_V2.fields.filter((f) => f.name !== 'channel'),
};

interface PaymentScore {
  paymentId: string;
  amount: number | null;
  decision: string;
  fraudScore: number;
  flagged: boolean;
  top: { label: string; score: number }[];
  model: string;
  modelVersion: string;
}

const mapping = (topic: string, resultTopic: string) => ({
  topic,
  schema: 'schemas/examples/payment.avsc',
  id: 'paymentId',
  model: 'fraud',
  result: {
    topic: resultTopic,
    name: 'PaymentScore',
    fields: [
      { name: 'decision', kind: 'label' },
      { name: 'fraudScore', kind: 'score', label: 'fraud' },
      { name: 'flagged', kind: 'threshold', label: 'fraud', threshold: 0.5 },
      { name: 'top', kind: 'topK', k: 2 },
    ],
    copy: ['amount'],
  },
});

async function setCompatibility(subject: string, level: string): Promise<void> {
  const response = await fetch(`${registryUrl}/config/${subject}`, {
    method: 'PUT',
    headers: { 'Content-Type': 'application/vnd.schemaregistry.v1+json' },
    body: JSON.stringify({ compatibility: level }),
  });
  expect(response.status, await response.text()).toBe(200);
}

/** Share of scores whose `flagged` equals the generator's ground truth. */
function accuracy(scores: PaymentScore[], truth: Map<string, boolean>): number {
  return scores.filter((s) => s.flagged === truth.get(s.paymentId)).length / scores.length;
}

describe('payments: field mapping, Schema Registry framing, evolution and a Python peer', () => {
  let service: Service;
  let topics: Record<'payments' | 'scores' | 'pyPayments' | 'pyScores' | 'dlq', string>;
  const registry = new SchemaRegistry({ host: registryUrl });

  beforeAll(async () => {
    topics = await freshTopics(
      brokers,
      'pay',
      ['payments', 'scores', 'pyPayments', 'pyScores', 'dlq'],
      2,
    );
    await setCompatibility(`${topics.payments}-value`, 'BACKWARD');
    service = await startService(
      loadConfig({
        env: {},
        overrides: {
          kafka: { brokers, groupId: uniqueTopic('pay-group') },
          topics: {
            requests: [topics.payments, topics.pyPayments],
            results: topics.scores,
            deadLetter: topics.dlq,
          },
          registry: {
            url: registryUrl,
            framed: [topics.payments, topics.scores, topics.pyPayments, topics.pyScores],
          },
          mappings: {
            byTopic: [
              mapping(topics.payments, topics.scores),
              mapping(topics.pyPayments, topics.pyScores),
            ],
          },
          model: {
            repository: 'models',
            name: 'fraud',
            version: '1',
            replicas: 0,
            backend: 'wasm',
          },
          batching: { maxBatchSize: 64, maxDelayMs: 5, autotune: false },
          http: { enabled: false },
        },
      }),
      { log: silentLogger },
    );
  });

  afterAll(async () => {
    await service?.stop();
  });

  it('answers every payment while the producer adds an optional field and then drops one (BACKWARD)', async () => {
    const producer = testKafka(brokers).producer({
      createPartitioner: Partitioners.DefaultPartitioner,
    });
    await producer.connect();
    const payments = generatePayments(900, 4242);
    const truth = new Map(payments.map((p) => [p.payment.paymentId, p.fraud]));
    const subject = `${topics.payments}-value`;
    const versions = [PAYMENT, PAYMENT_V2, PAYMENT_V3];
    const ids: number[] = [];
    try {
      for (const [v, schema] of versions.entries()) {
        const { id } = await registry.register(
          { type: SchemaType.AVRO, schema: JSON.stringify(schema) },
          { subject },
        );
        ids.push(id);
        const slice = payments.slice(v * 300, (v + 1) * 300);
        const messages = await Promise.all(
          slice.map(async ({ payment }: LabelledPayment, i) => {
            const record: Record<string, unknown> = { ...payment };
            if (v >= 1) record['deviceId'] = `device-${i % 7}`;
            if (v === 2) delete record['channel'];
            return { key: payment.paymentId, value: await registry.encode(id, record) };
          }),
        );
        await producer.send({ topic: topics.payments, messages });
      }
    } finally {
      await producer.disconnect();
    }
    expect(new Set(ids).size).toBe(3);

    const messages = await readAll(brokers, topics.scores, { expected: 900, timeoutMs: 90_000 });
    const scores = await Promise.all(
      messages.map(async (m) => (await registry.decode(m.value!)) as PaymentScore),
    );
    expect(scores).toHaveLength(900);
    expect(new Set(scores.map((s) => s.paymentId))).toEqual(new Set(truth.keys()));
    for (const score of scores) {
      expect(score.model).toBe('fraud');
      expect(['legit', 'fraud']).toContain(score.decision);
      expect(score.flagged).toBe(score.fraudScore >= 0.5);
      expect(score.top[0]!.label).toBe(score.decision);
    }
    // The model's held-out accuracy is 0.92; well above always answering "legit" (~0.84).
    expect(accuracy(scores, truth)).toBeGreaterThan(0.88);
    const dead = await readAll(brokers, topics.dlq, { expected: 1, timeoutMs: 2_000 });
    expect(dead).toHaveLength(0);
  });

  it('serves a Python producer and consumer using confluent-kafka with the same registry', async () => {
    expect(
      existsSync(PYTHON),
      `no Python peer venv at ${PYTHON}: run scripts/python-peer.sh first (CI's .ci/run does)`,
    ).toBe(true);
    const dir = await mkdtemp(path.join(tmpdir(), 'streamscore-pay-'));
    try {
      const payments = generatePayments(200, 777);
      const truth = new Map(payments.map((p) => [p.payment.paymentId, p.fraud]));
      const input = path.join(dir, 'payments.jsonl');
      await writeFile(input, payments.map((p) => JSON.stringify(p.payment)).join('\n') + '\n');
      const common = ['--brokers', brokers.join(','), '--registry', registryUrl];
      await execFileAsync(
        PYTHON,
        [
          'test/interop/produce_avro.py',
          ...common,
          '--topic',
          topics.pyPayments,
          '--schema',
          'schemas/examples/payment.avsc',
          '--input',
          input,
          '--key-field',
          'paymentId',
        ],
        { timeout: 120_000 },
      );
      const { stdout } = await execFileAsync(
        PYTHON,
        [
          'test/interop/consume_avro.py',
          ...common,
          '--topic',
          topics.pyScores,
          '--count',
          '200',
          '--timeout',
          '90',
          '--group',
          uniqueTopic('py-scores'),
        ],
        { timeout: 120_000, maxBuffer: 16 * 1024 * 1024 },
      );
      const scores = stdout
        .trim()
        .split('\n')
        .map((line) => JSON.parse(line) as PaymentScore);
      expect(scores).toHaveLength(200);
      expect(new Set(scores.map((s) => s.paymentId))).toEqual(new Set(truth.keys()));
      expect(scores.every((s) => s.model === 'fraud' && s.modelVersion === '1')).toBe(true);
      expect(accuracy(scores, truth)).toBeGreaterThan(0.85);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
