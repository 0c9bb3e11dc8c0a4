import { readFileSync } from 'node:fs';
import type avro from 'avsc';
import { describe, expect, it } from 'vitest';
import { FieldMapping } from '../../src/codec/mapping.js';
import type { InferenceResult } from '../../src/codec/types.js';
import type { FieldMappingConfig } from '../../src/config/schema.js';
import { isStreamscoreError } from '../../src/errors.js';
import { parseModelCard, toTensorSpecs } from '../../src/model/card.js';
import { generatePayments, paymentFeatures } from '../../src/model/payments-data.js';
import type { ModelInfo } from '../../src/model/types.js';

const PAYMENT_SCHEMA = JSON.parse(
  readFileSync('schemas/examples/payment.avsc', 'utf8'),
) as avro.Schema;
const card = parseModelCard(
  JSON.parse(readFileSync('models/fraud/1/card.json', 'utf8')),
  'models/fraud/1/card.json',
);
const fraud: ModelInfo = {
  name: card.name,
  version: card.version,
  inputs: toTensorSpecs(card.inputs),
  outputs: toTensorSpecs(card.outputs),
  labels: card.labels!,
  features: card.features!,
  backend: 'cpu',
};

function mapping(overrides: Partial<FieldMappingConfig> = {}): FieldMapping {
  return new FieldMapping(
    {
      topic: 'payments',
      schema: 'schemas/examples/payment.avsc',
      id: 'paymentId',
      result: {
        fields: [
          { name: 'decision', kind: 'label' },
          { name: 'fraudScore', kind: 'score', label: 'fraud' },
          { name: 'flagged', kind: 'threshold', label: 'fraud', threshold: 0.5 },
          { name: 'top', kind: 'topK', k: 2 },
          { name: 'scores', kind: 'scores' },
        ],
        copy: ['amount'],
      },
      ...overrides,
    },
    PAYMENT_SCHEMA,
    'mappings.byTopic[0]',
  );
}

/** The CONFIG_INVALID error `build` throws, or fails the test. */
function configError(build: () => void): { message: string; key: unknown } {
  try {
    build();
  } catch (err) {
    if (isStreamscoreError(err) && err.code === 'CONFIG_INVALID') {
      return { message: err.message, key: err.details.key };
    }
    throw err;
  }
  throw new Error('expected CONFIG_INVALID');
}

function resultOf(scores: number[]): InferenceResult {
  return {
    id: 'p-1',
    model: 'fraud',
    modelVersion: '1',
    outputs: [{ name: 'fraud_probability', shape: [2], data: Float32Array.from(scores) }],
    label: null,
    labelIndex: null,
    score: null,
    requestedAt: 1,
    receivedAt: 2,
    inferredAt: 3,
    sentAt: 4,
  };
}

describe('FieldMapping', () => {
  it('turns a payment into the exact row training used, with the card constants', () => {
    const m = mapping();
    m.check(fraud);
    for (const { payment } of generatePayments(50, 11)) {
      const request = m.toRequest({ ...payment });
      expect(request.id).toBe(payment.paymentId);
      const [input] = m.inputsFor(request, fraud);
      expect(input!.name).toBe('payment');
      expect(input!.shape).toEqual([18]);
      expect(Array.from(input!.data)).toEqual(Array.from(paymentFeatures(payment, card.features!)));
    }
  });

  it('feeds an unknown country as all zeros and refuses a null id-less or non-finite value', () => {
    const m = mapping({ inputs: undefined });
    const [payment] = generatePayments(1, 3).map((p) => p.payment);
    const request = m.toRequest({ ...payment!, country: 'ZZ' });
    const row = m.inputsFor(request, fraud)[0]!.data;
    expect(Array.from(row.subarray(7, 15))).toEqual(new Array(8).fill(0));
    const nan = m.toRequest({ ...payment!, amount: Number.NaN });
    expect(() => m.inputsFor(nan, fraud)).toThrow(expect.objectContaining({ code: 'NON_FINITE' }));
  });

  it('writes the result fields: label, a label score, threshold, top k, every score and copies', () => {
    const m = mapping();
    const request = m.toRequest({ paymentId: 'p-1', amount: 12.5 });
    const record = m.toResult(resultOf([0.25, 0.75]), request, fraud);
    expect(record).toMatchObject({
      paymentId: 'p-1',
      amount: 12.5,
      decision: 'fraud',
      flagged: true,
      model: 'fraud',
      modelVersion: '1',
      inferredAt: 3,
    });
    expect(record['fraudScore']).toBeCloseTo(0.75);
    expect(record['top']).toEqual([
      { label: 'fraud', score: 0.75 },
      { label: 'legit', score: 0.25 },
    ]);
    expect(record['scores']).toEqual({ legit: 0.25, fraud: 0.75 });
    // The generated schema accepts what the mapping writes, and round-trips it.
    const bytes = m.resultType.toBuffer(record);
    expect(m.resultType.fromBuffer(bytes)).toMatchObject({ decision: 'fraud', flagged: true });
    const below = m.toResult(resultOf([0.6, 0.4]), request, fraud);
    expect(below).toMatchObject({ decision: 'legit', flagged: false });
  });

  it('names the field when the mapping does not fit the schema', () => {
    expect(configError(() => mapping({ id: 'nope' }))).toMatchObject({
      key: 'mappings.byTopic[0].id',
    });
    const notNumeric = configError(() =>
      mapping({
        inputs: [{ field: 'country', mean: 0, std: 1 }],
      }).check(fraud),
    );
    expect(notNumeric.key).toBe('mappings.byTopic[0].inputs[0].field');
    expect(notNumeric.message).toMatch(/"country" is a string/);
    const missing = configError(() => mapping({ inputs: [{ field: 'amountEur' }] }).check(fraud));
    expect(missing.key).toBe('mappings.byTopic[0].inputs[0].field');
    expect(missing.message).toMatch(/no field "amountEur"/);
    const nullable = configError(() =>
      mapping({
        inputs: [
          { field: 'channel', vocabulary: ['web'] },
          { field: 'paymentId', mean: 0 },
        ],
      }).check(fraud),
    );
    expect(nullable.message).toMatch(/"paymentId" is a string/);
    const copy = configError(() =>
      mapping({ result: { fields: [{ name: 'x', kind: 'label' }], copy: ['nope'] } }),
    );
    expect(copy.key).toBe('mappings.byTopic[0].result.copy[0]');
  });

  it('names the field when the mapping does not fit the model', () => {
    const order = configError(() =>
      mapping({
        inputs: [
          { field: 'merchantCategory' },
          { field: 'amount' },
          { field: 'country' },
          { field: 'hourOfDay' },
          { field: 'cardPresent' },
          { field: 'accountAgeDays' },
        ],
      }).check(fraud),
    );
    expect(order.key).toBe('mappings.byTopic[0].inputs[0]');
    expect(order.message).toMatch(/card's order/);
    const width = configError(() =>
      mapping({ inputs: [{ field: 'amount', mean: 0, std: 1 }] }).check({
        ...fraud,
        features: undefined,
      }),
    );
    expect(width.message).toMatch(/1 columns, model fraud@1's input "payment" takes 18/);
    const label = configError(() =>
      mapping({
        result: {
          fields: [{ name: 'f', kind: 'threshold', label: 'stolen', threshold: 0.5 }],
          copy: [],
        },
      }).check(fraud),
    );
    expect(label.key).toBe('mappings.byTopic[0].result.fields[0].label');
    const topK = configError(() =>
      mapping({ result: { fields: [{ name: 't', kind: 'topK', k: 3 }], copy: [] } }).check(fraud),
    );
    expect(topK.key).toBe('mappings.byTopic[0].result.fields[0].k');
    const noLabels = configError(() => mapping().check({ ...fraud, labels: undefined }));
    expect(noLabels.message).toMatch(/needs the model's labels/);
  });

  it('uses the constants of the version that scores the request', () => {
    const m = mapping();
    const shifted: ModelInfo = {
      ...fraud,
      version: '2',
      features: card.features!.map((f) =>
        f.name === 'amount' && f.kind === 'numeric' ? { ...f, mean: 0, std: 1 } : f,
      ),
    };
    const request = m.toRequest({ ...generatePayments(1, 5)[0]!.payment, amount: 100 });
    expect(m.inputsFor(request, shifted)[0]!.data[0]).toBe(100);
    expect(m.inputsFor(request, fraud)[0]!.data[0]).not.toBe(100);
    // A version this mapping cannot feed fails its requests as ours (category failed).
    const narrow: ModelInfo = {
      ...fraud,
      version: '3',
      inputs: [{ name: 'payment', dtype: 'float32', shape: [5] }],
    };
    expect(() => m.inputsFor(request, narrow)).toThrow(
      expect.objectContaining({ code: 'MODEL_INVALID' }),
    );
  });
});
