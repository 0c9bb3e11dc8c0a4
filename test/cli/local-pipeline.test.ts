/**
 * The local pipeline (`score --local`) scores through the service's InferenceWorker without a
 * broker: labels agree with the model run offline, bad requests become dead letters with the
 * service's codes, and every call gets its outcomes back in input order, also when calls overlap.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  PipelineClosed,
  startLocalPipeline,
  type LocalOutcome,
  type LocalPipeline,
} from '../../src/cli/local-pipeline.js';
import { AvroCodec } from '../../src/codec/avro.js';
import type { InferenceRequest } from '../../src/codec/types.js';
import { loadConfig } from '../../src/config/index.js';
import { selectBackend } from '../../src/model/backend.js';
import { loadDigitsDataset, type Sample } from '../../src/model/digits-data.js';
import { loadModel } from '../../src/model/repository.js';
import { silentLogger } from '../../src/telemetry/logger.js';
import { HEADER } from '../../src/worker/headers.js';
import { DIGITS_DIR, MODELS_ROOT } from '../model/helpers.js';

const codec = new AvroCodec();
const TOPIC = 'digits.requests';

const config = loadConfig({
  env: {},
  overrides: {
    topics: { requests: [TOPIC] },
    model: { repository: MODELS_ROOT, name: 'digits', version: '1', replicas: 0, backend: 'wasm' },
    batching: { maxDelayMs: 5 },
    limits: { maxPayloadBytes: 4096 },
    log: { level: 'silent' },
  },
});

function request(id: string, sample: Sample, extra: Partial<InferenceRequest> = {}): Buffer {
  return codec.encodeRequest({
    id,
    model: null,
    modelVersion: null,
    requestedAt: Date.now(),
    inputs: [{ name: 'pixels', shape: [64], data: sample.pixels }],
    ...extra,
  });
}

const idOf = (outcome: LocalOutcome) =>
  outcome.kind === 'result'
    ? codec.decodeResult(outcome.value).id
    : String(outcome.headers[HEADER.correlationId]);

describe('local pipeline', () => {
  const { heldOut } = loadDigitsDataset();
  /** The label the model gives each held-out sample offline, by sample id. */
  const offline = new Map<string, string>();
  let pipeline: LocalPipeline;

  beforeAll(async () => {
    const { tf, backend } = await selectBackend('wasm', silentLogger);
    const model = await loadModel(DIGITS_DIR, { tf, backend, log: silentLogger });
    const pixels = new Float32Array(heldOut.length * 64);
    heldOut.forEach((s, i) => pixels.set(s.pixels, i * 64));
    const { probabilities } = await model.predict({ size: heldOut.length, inputs: { pixels } });
    heldOut.forEach((s, i) => {
      const p = probabilities!.slice(i * 10, (i + 1) * 10);
      offline.set(s.id, String(p.indexOf(Math.max(...p))));
    });
    await model.dispose();
    pipeline = await startLocalPipeline(config, { log: silentLogger });
  });

  afterAll(async () => {
    await pipeline?.close();
  });

  it('answers every request with the label the model gives it offline, in input order', async () => {
    const samples = heldOut.slice(0, 300);
    const outcomes = await pipeline.score(
      samples.map((s, i) => ({
        topic: TOPIC,
        key: Buffer.from(`k-${i}`),
        value: request(`r-${i}`, s),
      })),
    );
    expect(outcomes).toHaveLength(samples.length);
    outcomes.forEach((outcome, i) => {
      expect(outcome.kind).toBe('result');
      if (outcome.kind !== 'result') return;
      const result = codec.decodeResult(outcome.value);
      expect(result.id).toBe(`r-${i}`);
      expect(result.label).toBe(offline.get(samples[i]!.id));
      expect(result.modelVersion).toBe('1');
      expect(String(outcome.headers[HEADER.correlationId])).toBe(`r-${i}`);
    });
  });

  it('dead-letters bad requests with the service codes and answers the good ones around them', async () => {
    const good = request('good-0', heldOut[0]!);
    const cases: { value: Buffer; code: string | null }[] = [
      { value: good, code: null },
      { value: Buffer.alloc(0), code: 'EMPTY_PAYLOAD' },
      { value: good.subarray(0, 30), code: 'DECODE_FAILED' },
      {
        value: codec.encodeRequest({
          id: 'wrong-shape',
          model: null,
          modelVersion: null,
          requestedAt: null,
          inputs: [{ name: 'pixels', shape: [32], data: new Float32Array(32) }],
        }),
        code: 'WRONG_SHAPE',
      },
      { value: request('unknown-model', heldOut[1]!, { model: 'nope' }), code: 'UNKNOWN_MODEL' },
      {
        value: request('unknown-version', heldOut[2]!, { modelVersion: '9' }),
        code: 'UNKNOWN_MODEL_VERSION',
      },
      { value: Buffer.alloc(5000, 1), code: 'PAYLOAD_TOO_LARGE' },
      { value: request('good-1', heldOut[3]!), code: null },
    ];
    const outcomes = await pipeline.score(
      cases.map((c, i) => ({ topic: TOPIC, key: Buffer.from(`bad-${i}`), value: c.value })),
    );
    expect(outcomes.map((o) => (o.kind === 'result' ? null : o.code))).toEqual(
      cases.map((c) => c.code),
    );
    const [first, , , wrongShape] = outcomes as [
      LocalOutcome,
      LocalOutcome,
      LocalOutcome,
      LocalOutcome,
    ];
    expect(first.kind === 'result' && codec.decodeResult(first.value).label).toBe(
      offline.get(heldOut[0]!.id),
    );
    // A dead letter says why, as on the dead-letter topic, and keeps the request id when known.
    expect(wrongShape).toMatchObject({
      kind: 'deadLetter',
      message: expect.stringMatching(/shape/i),
    });
    expect(String(wrongShape.headers[HEADER.errorCategory])).toBe('unprocessable');
    expect(String(wrongShape.headers[HEADER.correlationId])).toBe('wrong-shape');
  });

  it('keeps each call in its own input order when calls overlap', async () => {
    const calls = Array.from({ length: 8 }, (_, c) =>
      Array.from({ length: 40 + c * 7 }, (_, i) => {
        const id = `c${c}-${i}`;
        // Every fifth request is broken, so results and dead letters interleave.
        const value =
          i % 5 === 4
            ? Buffer.from('not avro')
            : request(id, heldOut[(c * 50 + i) % heldOut.length]!);
        return { id, broken: i % 5 === 4, record: { topic: TOPIC, key: Buffer.from(id), value } };
      }),
    );
    const outcomes = await Promise.all(
      calls.map((call) => pipeline.score(call.map((r) => r.record))),
    );
    outcomes.forEach((out, c) => {
      expect(out).toHaveLength(calls[c]!.length);
      out.forEach((outcome, i) => {
        const sent = calls[c]![i]!;
        if (sent.broken) {
          expect(outcome.kind === 'deadLetter' && outcome.code).toBe('DECODE_FAILED');
        } else {
          expect(outcome.kind).toBe('result');
          expect(idOf(outcome)).toBe(sent.id);
        }
      });
    });
  });

  it('refuses records once closed', async () => {
    const own = await startLocalPipeline(config, { log: silentLogger });
    const [outcome] = await own.score([
      { topic: TOPIC, key: null, value: request('last', heldOut[0]!) },
    ]);
    expect(outcome!.kind).toBe('result');
    await own.close();
    await own.close();
    await expect(
      own.score([{ topic: TOPIC, key: null, value: request('late', heldOut[0]!) }]),
    ).rejects.toBeInstanceOf(PipelineClosed);
  });
});
