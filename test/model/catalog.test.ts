import { describe, expect, it } from 'vitest';
import { StreamscoreError } from '../../src/errors.js';
import { ModelCatalog } from '../../src/model/catalog.js';
import { SwappableModel } from '../../src/model/swappable.js';
import type { ModelInfo, ModelRunner } from '../../src/model/types.js';
import { FakeModel } from '../helpers/fakes.js';

function fake(name: string, version: string): ModelRunner {
  const model = new FakeModel();
  (model as { info: ModelInfo }).info = { ...model.info, name, version };
  return model;
}

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (err) {
    return err instanceof StreamscoreError ? `${err.code}: ${err.message}` : String(err);
  }
  return undefined;
}

describe('ModelCatalog', () => {
  const main = new SwappableModel(fake('digits', '2'));
  const v1 = fake('digits', '1');
  const fraud = fake('fraud', '4');
  const catalog = new ModelCatalog('digits')
    .add('digits', { main, pinned: [v1] })
    .add('fraud', { main: fraud, pinned: [] })
    .route('payments', 'fraud');

  it('gives a request naming nothing its topic model, else the default model, by policy', () => {
    expect(catalog.resolve('requests', null, null)).toEqual({ runner: main, byPolicy: true });
    expect(catalog.resolve('payments', null, null)).toEqual({ runner: fraud, byPolicy: true });
  });

  it('serves named models and versions, the main version included', () => {
    expect(catalog.resolve('payments', 'digits', null).runner).toBe(main);
    expect(catalog.resolve('requests', 'digits', '1')).toEqual({ runner: v1, byPolicy: false });
    expect(catalog.resolve('requests', null, '2')).toEqual({ runner: main, byPolicy: false });
    expect(catalog.resolve('requests', 'fraud', '4').runner).toBe(fraud);
  });

  it('refuses unknown models and versions with their own codes, naming what is served', () => {
    expect(codeOf(() => catalog.resolve('requests', 'nope', null))).toBe(
      'UNKNOWN_MODEL: request asks for model nope; this worker serves digits, fraud',
    );
    expect(codeOf(() => catalog.resolve('requests', null, '9'))).toBe(
      'UNKNOWN_MODEL_VERSION: request asks for digits version 9; this worker serves digits versions 2, 1',
    );
    expect(codeOf(() => catalog.resolve('payments', null, '1'))).toMatch(
      /^UNKNOWN_MODEL_VERSION: request asks for fraud version 1; this worker serves fraud version 4$/,
    );
  });

  it('follows a hot swap of a main runner', () => {
    const swappable = new SwappableModel(fake('m', '1'));
    const c = new ModelCatalog('m').add('m', { main: swappable, pinned: [] });
    swappable.swap(fake('m', '3'));
    expect(c.resolve('t', null, '3').runner).toBe(swappable);
    expect(codeOf(() => c.resolve('t', null, '1'))).toMatch(/^UNKNOWN_MODEL_VERSION/);
  });

  it('refuses a topic route to a model it does not serve', () => {
    expect(() => new ModelCatalog('a').route('t', 'b')).toThrow(/not served/);
  });
});
