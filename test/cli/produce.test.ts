import { describe, expect, it } from 'vitest';
import { requestGenerator, servedModelFor, TokenBucket } from '../../src/cli/produce.js';
import { clientCodecFor } from '../../src/codec/topics.js';
import { loadConfig, type StreamscoreConfig } from '../../src/config/index.js';
import { MERCHANT_CATEGORIES, PAYMENT_COUNTRIES } from '../../src/model/payments-data.js';

function config(overrides: Record<string, unknown> = {}): StreamscoreConfig {
  return loadConfig({
    env: {},
    overrides: {
      topics: { requests: ['digits', 'payments'] },
      model: { name: 'digits', version: '1', additional: ['fraud@1'], byTopic: [] },
      mappings: {
        byTopic: [
          {
            topic: 'payments',
            schema: 'schemas/examples/payment.avsc',
            id: 'paymentId',
            model: 'fraud',
            result: { fields: [{ name: 'decision', kind: 'label' }] },
          },
        ],
      },
      ...overrides,
    },
  });
}

describe('TokenBucket', () => {
  it('gives `rate` tokens a second after the first burst, never more than the burst at once', () => {
    const bucket = new TokenBucket(100, 5, 0);
    expect(bucket.take(500, 0)).toBe(5);
    expect(bucket.take(500, 0)).toBe(0);
    expect(bucket.waitMs(0)).toBe(10);
    expect(bucket.take(500, 10)).toBe(1);
    // Idle for a long time: only the burst is saved up.
    expect(bucket.take(500, 60_000)).toBe(5);
    // Over a second of steady asking, `rate` tokens.
    let granted = 0;
    for (let t = 60_001; t <= 61_000; t++) granted += bucket.take(500, t);
    expect(granted).toBe(100);
  });
});

describe('servedModelFor', () => {
  it('takes the mapping’s model, then model.byTopic, then model.name', () => {
    expect(servedModelFor(config(), 'payments')).toEqual({ name: 'fraud', version: '1' });
    expect(servedModelFor(config(), 'digits')).toEqual({ name: 'digits', version: '1' });
    const byTopic = config({
      model: { name: 'digits', additional: ['digits-uint8'], byTopic: ['digits=digits-uint8'] },
    });
    expect(servedModelFor(byTopic, 'digits')).toEqual({ name: 'digits-uint8', version: 'latest' });
  });
});

describe('requestGenerator', () => {
  it('InferenceRequests: one tensor of the card’s input shape, valid for the schema', async () => {
    const cfg = config();
    const codec = await clientCodecFor(cfg, 'digits');
    const make = await requestGenerator(cfg, codec, 7, 'run');
    const request = make(3) as {
      id: string;
      inputs: { name: string; shape: number[]; data: Buffer }[];
    };
    expect(request.id).toBe('run-3');
    expect(request.inputs).toHaveLength(1);
    expect(request.inputs[0]!.name).toBe('pixels');
    expect(request.inputs[0]!.shape).toEqual([64]);
    expect(request.inputs[0]!.data).toHaveLength(64 * 4);
    expect(codec.requestType.isValid(request)).toBe(true);
    // The same seed, the same requests.
    const again = await requestGenerator(cfg, codec, 7, 'other');
    const twin = await requestGenerator(cfg, codec, 7, 'run');
    expect(twin(0)['inputs']).toEqual(again(0)['inputs']);
  });

  it('domain records: valid payments with the card’s vocabularies and realistic numbers', async () => {
    const cfg = config();
    const codec = await clientCodecFor(cfg, 'payments');
    const make = await requestGenerator(cfg, codec, 11, 'run');
    const payments = Array.from({ length: 2000 }, (_, i) => make(i));
    for (const p of payments) expect(codec.requestType.isValid(p)).toBe(true);
    expect(payments[5]!['paymentId']).toBe('run-5');
    const categories = new Set(payments.map((p) => p['merchantCategory']));
    expect([...categories].sort()).toEqual([...MERCHANT_CATEGORIES].sort());
    const countries = new Set(payments.map((p) => p['country']));
    expect([...countries].sort()).toEqual([...PAYMENT_COUNTRIES].sort());
    const amounts = payments.map((p) => p['amount'] as number);
    expect(Math.min(...amounts)).toBeGreaterThan(0);
    const mean = amounts.reduce((a, b) => a + b, 0) / amounts.length;
    // The card's mean amount is about 164 EUR.
    expect(mean).toBeGreaterThan(100);
    expect(mean).toBeLessThan(250);
    const present = payments.filter((p) => p['cardPresent'] === true).length / payments.length;
    expect(present).toBeGreaterThan(0.45);
    expect(present).toBeLessThan(0.65);
    expect(payments.every((p) => p['channel'] === null)).toBe(true);
  });
});
