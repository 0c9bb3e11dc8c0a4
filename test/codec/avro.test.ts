import { describe, expect, it } from 'vitest';
import { AvroCodec, toExample, type InferenceRequest } from '../../src/codec/index.js';
import type { TensorSpec } from '../../src/model/types.js';
import { packBatch } from '../../src/worker/tensors.js';
import { thrown } from '../helpers/errors.js';

const codec = new AvroCodec();
const pixels = Float32Array.from({ length: 64 }, (_, i) => i / 64);
const request = (data: Float32Array = pixels, shape = [64]): InferenceRequest => ({
  id: 'req-1',
  model: null,
  modelVersion: null,
  requestedAt: 1_700_000_000_000,
  inputs: [{ name: 'pixels', shape, data }],
});
const inputs: TensorSpec[] = [{ name: 'pixels', dtype: 'float32', shape: [64] }];

const codeOf = (fn: () => unknown) => thrown(fn).code;

/** The encoded request placed at byte offsets 0..3, so its float bytes land unaligned too. */
function atEachOffset(value: Buffer): Buffer[] {
  return [0, 1, 2, 3].map((shift) => {
    const backing = Buffer.alloc(value.length + shift);
    value.copy(backing, shift);
    return backing.subarray(shift);
  });
}

describe('AvroCodec requests', () => {
  it.each(['bytes', 'array'] as const)(
    'round-trips float32 data encoded as %s exactly',
    (encoding) => {
      const decoded = codec.decodeRequest(codec.encodeRequest(request(), encoding));
      expect(decoded.id).toBe('req-1');
      expect(decoded.requestedAt).toBe(1_700_000_000_000);
      expect(decoded.inputs[0]!.shape).toEqual([64]);
      expect(decoded.inputs[0]!.data).toBeInstanceOf(Float32Array);
      expect(Array.from(decoded.inputs[0]!.data)).toEqual(Array.from(pixels));
    },
  );

  it('bytes encoding is 4 little-endian bytes per value', () => {
    const one = codec.encodeRequest(request(Float32Array.of(1.5), [1]), 'bytes');
    const le = Buffer.alloc(4);
    le.writeFloatLE(1.5);
    expect(one.includes(le)).toBe(true);
  });

  it('decodes float bytes at any byte offset', () => {
    for (const value of atEachOffset(codec.encodeRequest(request(), 'bytes'))) {
      const decoded = codec.decodeRequest(value);
      expect(Array.from(decoded.inputs[0]!.data)).toEqual(Array.from(pixels));
    }
  });

  it('copies float bytes once, into the batch: until then they share the record memory', () => {
    const values = atEachOffset(codec.encodeRequest(request(), 'bytes'));
    const examples = values.map((value) => ({
      example: toExample(codec.decodeRequest(value), inputs),
    }));
    examples.forEach(({ example }, i) => expect(example.pixels!.buffer).toBe(values[i]!.buffer));
    const packed = packBatch(examples, inputs).inputs.pixels!;
    expect(packed.buffer).toBeInstanceOf(SharedArrayBuffer);
    for (let i = 0; i < values.length; i++) {
      expect(Array.from(packed.subarray(i * 64, (i + 1) * 64))).toEqual(Array.from(pixels));
    }
  });

  it('rejects garbage, truncated records and trailing bytes as DECODE_FAILED', () => {
    const encoded = codec.encodeRequest(request(), 'bytes');
    expect(codeOf(() => codec.decodeRequest(Buffer.from('not avro at all')))).toBe('DECODE_FAILED');
    expect(codeOf(() => codec.decodeRequest(encoded.subarray(0, encoded.length - 7)))).toBe(
      'DECODE_FAILED',
    );
    expect(codeOf(() => codec.decodeRequest(Buffer.concat([encoded, Buffer.from([1, 2])])))).toBe(
      'DECODE_FAILED',
    );
  });
});

describe('AvroCodec results', () => {
  it.each(['bytes', 'array'] as const)('round-trips a result with %s outputs', (encoding) => {
    const resultCodec = new AvroCodec({ resultFloatEncoding: encoding });
    const probabilities = Float32Array.from([0.1, 0.7, 0.2]);
    const result = {
      id: 'r',
      model: 'digits',
      modelVersion: '1',
      outputs: [{ name: 'probabilities', shape: [3], data: probabilities }],
      label: '1',
      labelIndex: 1,
      score: probabilities[1]!,
      requestedAt: 1,
      receivedAt: 2,
      inferredAt: 3,
      sentAt: 4,
    };
    const decoded = resultCodec.decodeResult(resultCodec.encodeResult(result));
    expect(decoded).toMatchObject({ id: 'r', label: '1', labelIndex: 1, sentAt: 4 });
    expect(Array.from(decoded.outputs[0]!.data)).toEqual(Array.from(probabilities));
  });
});

describe('toExample', () => {
  it('returns the data of a well-formed request', () => {
    expect(Array.from(toExample(request(), inputs).pixels!)).toEqual(Array.from(pixels));
  });

  it('accepts a leading batch dimension of 1', () => {
    expect(toExample(request(pixels, [1, 64]), inputs).pixels!.length).toBe(64);
  });

  it('rejects a shape the model does not take', () => {
    expect(codeOf(() => toExample(request(new Float32Array(32), [32]), inputs))).toBe(
      'WRONG_SHAPE',
    );
  });

  it('rejects data whose length disagrees with its declared shape', () => {
    expect(codeOf(() => toExample(request(new Float32Array(63), [64]), inputs))).toBe(
      'WRONG_SHAPE',
    );
  });

  it('rejects NaN and infinities, whether the bytes are aligned or not', () => {
    const bad = Float32Array.from(pixels);
    for (const value of [Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY]) {
      bad[10] = value;
      expect(codeOf(() => toExample(request(bad), inputs))).toBe('NON_FINITE');
      for (const encoded of atEachOffset(codec.encodeRequest(request(bad), 'bytes'))) {
        expect(codeOf(() => toExample(codec.decodeRequest(encoded), inputs))).toBe('NON_FINITE');
      }
    }
  });

  it('rejects missing and unknown inputs of multi-input models', () => {
    const two: TensorSpec[] = [
      { name: 'a', dtype: 'float32', shape: [2] },
      { name: 'b', dtype: 'float32', shape: [1] },
    ];
    const base = { id: 'x', model: null, modelVersion: null, requestedAt: null };
    expect(
      codeOf(() =>
        toExample({ ...base, inputs: [{ name: 'a', shape: [2], data: new Float32Array(2) }] }, two),
      ),
    ).toBe('MISSING_INPUT');
    expect(
      codeOf(() =>
        toExample(
          {
            ...base,
            inputs: [
              { name: 'a', shape: [2], data: new Float32Array(2) },
              { name: 'c', shape: [1], data: new Float32Array(1) },
            ],
          },
          two,
        ),
      ),
    ).toBe('UNKNOWN_INPUT');
  });
});
