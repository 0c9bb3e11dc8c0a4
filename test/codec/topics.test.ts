import { readFileSync } from 'node:fs';
import avro from 'avsc';
import { describe, expect, it } from 'vitest';
import { frame, type SchemaRegistryClient } from '../../src/codec/registry.js';
import { clientCodecFor, TopicCodecs } from '../../src/codec/topics.js';
import type { InferenceResult } from '../../src/codec/types.js';
import { loadConfig } from '../../src/config/index.js';
import type { ConfigInput } from '../../src/config/schema.js';
import { StreamscoreError } from '../../src/errors.js';
import { parseModelCard, toTensorSpecs } from '../../src/model/card.js';
import type { ModelInfo } from '../../src/model/types.js';

/** A registry in memory; `down` makes it answer as an unreachable one would. */
class FakeRegistry implements SchemaRegistryClient {
  readonly schemas = new Map<number, avro.Schema>();
  readonly subjects = new Map<string, number[]>();
  down = false;
  fetches = 0;

  writerType(id: number): Promise<avro.Type> {
    this.fetches++;
    if (this.down) {
      return Promise.reject(
        new StreamscoreError('REGISTRY_UNAVAILABLE', 'connect ECONNREFUSED', { retriable: true }),
      );
    }
    const schema = this.schemas.get(id);
    if (!schema) return Promise.reject(new StreamscoreError('UNKNOWN_SCHEMA_ID', `no ${id}`));
    return Promise.resolve(avro.Type.forSchema(schema));
  }

  register(subject: string, schema: avro.Schema): Promise<number> {
    const text = JSON.stringify(schema);
    for (const [id, known] of this.schemas)
      if (JSON.stringify(known) === text) return Promise.resolve(id);
    const id = this.schemas.size + 1;
    this.schemas.set(id, schema);
    this.subjects.set(subject, [...(this.subjects.get(subject) ?? []), id]);
    return Promise.resolve(id);
  }
}

const PAYMENT_JSON = JSON.parse(readFileSync('schemas/examples/payment.avsc', 'utf8')) as {
  fields: { name: string }[];
} & Record<string, unknown>;
const PAYMENT = PAYMENT_JSON as unknown as avro.Schema;
const card = parseModelCard(JSON.parse(readFileSync('models/fraud/1/card.json', 'utf8')), 'card');
const fraud: ModelInfo = {
  name: 'fraud',
  version: '1',
  inputs: toTensorSpecs(card.inputs),
  outputs: toTensorSpecs(card.outputs),
  labels: card.labels!,
  features: card.features!,
  backend: 'cpu',
};

function config(extra: ConfigInput = {}) {
  return loadConfig({
    env: {},
    overrides: {
      topics: { requests: ['payments', 'tensors'], results: 'scores' },
      registry: { url: 'http://registry.invalid', framed: ['payments', 'scores'], retryMs: 10 },
      mappings: {
        byTopic: [
          {
            topic: 'payments',
            schema: 'schemas/examples/payment.avsc',
            id: 'paymentId',
            model: 'fraud',
            result: {
              topic: 'payment-scores',
              fields: [{ name: 'decision', kind: 'label' }],
            },
          },
        ],
      },
      ...extra,
    },
  });
}

const payment = {
  paymentId: 'p-7',
  amount: 420,
  merchantCategory: 'CRYPTO',
  country: 'FR',
  hourOfDay: 3,
  cardPresent: false,
  accountAgeDays: 12,
  channel: null,
};

/** What the worker would hand the codec for one payment scored [legit, fraud]. */
function fraudResult(id: string, legit: number, fraudScore: number): InferenceResult {
  return {
    id,
    model: 'fraud',
    modelVersion: '1',
    outputs: [{ name: 'fraud_probability', shape: [2], data: Float32Array.of(legit, fraudScore) }],
    label: null,
    labelIndex: null,
    score: null,
    requestedAt: 0,
    receivedAt: 0,
    inferredAt: 5,
    sentAt: 0,
  };
}

describe('TopicCodecs', () => {
  it('reads framed records written with an evolved schema (a field added, another dropped)', async () => {
    const registry = new FakeRegistry();
    const codecs = await TopicCodecs.create(config(), { registry });
    const added = {
      ...PAYMENT_JSON,
      fields: [
        ...PAYMENT_JSON.fields,
        { name: 'deviceId', type: ['null', 'string'], default: null },
      ],
    } as unknown as avro.Schema;
    const dropped = {
      ...PAYMENT_JSON,
      fields: PAYMENT_JSON.fields.filter((f) => f.name !== 'channel'),
    } as unknown as avro.Schema;
    const values: Buffer[] = [];
    for (const [schema, record] of [
      [PAYMENT, payment],
      [added, { ...payment, paymentId: 'p-8', deviceId: 'd-1' }],
      [dropped, { ...payment, paymentId: 'p-9', channel: undefined }],
    ] as const) {
      const id = await registry.register('payments-value', schema);
      values.push(frame(id, avro.Type.forSchema(schema).toBuffer(record)));
    }
    const records = values.map((value) => ({ topic: 'payments', value }));
    await codecs.prepare(records, () => false);
    const codec = codecs.forTopic('payments');
    const requests = values.map((v) => codec.decodeRequest(v));
    expect(requests.map((r) => r.id)).toEqual(['p-7', 'p-8', 'p-9']);
    expect(requests[2]!.fields).toMatchObject({ channel: null, merchantCategory: 'CRYPTO' });
    // Writer schemas are fetched once per id, not per record.
    await codecs.prepare(records, () => false);
    expect(registry.fetches).toBe(3);
    expect(codec.resultTopic).toBe('payment-scores');
  });

  it('dead-letters an unknown schema id, a schema it cannot read, and unframed bytes', async () => {
    const registry = new FakeRegistry();
    const codecs = await TopicCodecs.create(config(), { registry });
    const incompatible = await registry.register('x', {
      type: 'record',
      name: 'Payment',
      namespace: 'com.example.payments',
      fields: [{ name: 'paymentId', type: 'long' }],
    } as avro.Schema);
    const unknown = frame(999, Buffer.from([2, 65]));
    const unreadable = frame(incompatible, Buffer.from([2]));
    const raw = avro.Type.forSchema(PAYMENT).toBuffer(payment);
    await codecs.prepare(
      [unknown, unreadable, raw].map((value) => ({ topic: 'payments', value })),
      () => false,
    );
    const codec = codecs.forTopic('payments');
    expect(() => codec.decodeRequest(unknown)).toThrow(
      expect.objectContaining({ code: 'UNKNOWN_SCHEMA_ID' }),
    );
    expect(() => codec.decodeRequest(unreadable)).toThrow(
      expect.objectContaining({ code: 'SCHEMA_MISMATCH' }),
    );
    expect(() => codec.decodeRequest(raw)).toThrow(
      expect.objectContaining({ code: 'DECODE_FAILED' }),
    );
  });

  it('waits while the registry is down and goes on once it is back; gives up only when abandoned', async () => {
    const registry = new FakeRegistry();
    const codecs = await TopicCodecs.create(config(), { registry });
    const id = await registry.register('payments-value', PAYMENT);
    const value = frame(id, avro.Type.forSchema(PAYMENT).toBuffer(payment));
    registry.down = true;
    const prepared = codecs.prepare([{ topic: 'payments', value }], () => false);
    await new Promise((resolve) => setTimeout(resolve, 60));
    expect(registry.fetches).toBeGreaterThan(1);
    registry.down = false;
    await prepared;
    expect(codecs.forTopic('payments').decodeRequest(value).id).toBe('p-7');

    const other = frame(id + 1, Buffer.alloc(1));
    registry.down = true;
    let abandon = false;
    const given = codecs.prepare([{ topic: 'payments', value: other }], () => abandon);
    abandon = true;
    await expect(given).rejects.toMatchObject({ code: 'REGISTRY_UNAVAILABLE' });
  });

  it('frames results with the schema registered under <result topic>-value; raw topics stay raw', async () => {
    const registry = new FakeRegistry();
    const codecs = await TopicCodecs.create(
      config({
        registry: {
          url: 'http://registry.invalid',
          framed: ['payments', 'payment-scores'],
        },
      }),
      { registry },
    );
    const [resultId] = registry.subjects.get('payment-scores-value')!;
    expect(resultId).toBeDefined();
    const codec = codecs.forTopic('payments');
    const request = codec.mapping!.toRequest({ ...payment });
    const value = codec.encodeResult(fraudResult('p-7', 0.1, 0.9), request, fraud);
    expect(value[0]).toBe(0);
    expect(value.readInt32BE(1)).toBe(resultId);
    const result = avro.Type.forSchema(registry.schemas.get(resultId!)!).fromBuffer(
      value.subarray(5),
    );
    expect(result).toMatchObject({ paymentId: 'p-7', decision: 'fraud', model: 'fraud' });
    // The InferenceRequest topic is neither framed nor mapped.
    expect(codecs.forTopic('tensors').resultTopic).toBe('scores');
    expect(codecs.resultTopics.sort()).toEqual(['payment-scores', 'scores']);
  });

  it('a client encodes framed requests (registering its schema) and decodes framed results', async () => {
    const registry = new FakeRegistry();
    const cfg = config({
      registry: { url: 'http://registry.invalid', framed: ['payments', 'payment-scores'] },
    });
    const client = await clientCodecFor(cfg, 'payments', { registry });
    expect(client.idField).toBe('paymentId');
    const value = await client.encodeRequest(payment);
    expect(registry.subjects.get('payments-value')).toHaveLength(1);
    const worker = await TopicCodecs.create(cfg, { registry });
    await worker.prepare([{ topic: 'payments', value }], () => false);
    const codec = worker.forTopic('payments');
    const request = codec.decodeRequest(value);
    const result = codec.encodeResult(fraudResult(request.id, 0.8, 0.2), request, fraud);
    expect(await client.decodeResult(result)).toMatchObject({
      paymentId: 'p-7',
      decision: 'legit',
    });
  });

  it('fails at start naming the key: framing without a registry, a mapping of an unread topic, a bad schema path', async () => {
    await expect(
      TopicCodecs.create(config({ registry: { url: null, framed: ['payments'] } })),
    ).rejects.toMatchObject({ code: 'CONFIG_INVALID', details: { key: 'registry.url' } });
    await expect(
      TopicCodecs.create(config({ topics: { requests: ['tensors'] } }), {
        registry: new FakeRegistry(),
      }),
    ).rejects.toMatchObject({ details: { key: 'mappings.byTopic[0].topic' } });
    await expect(
      TopicCodecs.create(
        config({
          mappings: {
            byTopic: [
              {
                topic: 'payments',
                schema: 'schemas/examples/nope.avsc',
                result: { fields: [{ name: 'l', kind: 'label' }] },
              },
            ],
          },
        }),
        { registry: new FakeRegistry() },
      ),
    ).rejects.toMatchObject({ details: { key: 'mappings.byTopic[0].schema' } });
  });
});
