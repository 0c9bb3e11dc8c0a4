import { StreamscoreError } from '../errors.js';
import type { ExampleShape, TensorSpec } from '../model/types.js';
import type { InferenceRequest, NamedTensor } from './types.js';

const sizeOf = (shape: readonly number[]) => shape.reduce((n, d) => n * d, 1);

function shapeFits(declared: readonly number[], expected: ExampleShape): boolean {
  // A leading 1 is a batch of one: accept it as the example itself.
  const shape =
    declared.length === expected.length + 1 && declared[0] === 1 ? declared.slice(1) : declared;
  return (
    shape.length === expected.length &&
    shape.every((d, i) => expected[i] === null || expected[i] === d)
  );
}

const describeShape = (shape: ExampleShape) => `[${shape.map((d) => d ?? '?').join(', ')}]`;

function findTensor(request: InferenceRequest, spec: TensorSpec, single: boolean): NamedTensor {
  const byName = request.inputs.find((t) => t.name === spec.name);
  if (byName) return byName;
  // A single-input model takes a single tensor whatever the caller named it.
  if (single && request.inputs.length === 1) return request.inputs[0]!;
  throw new StreamscoreError(
    'MISSING_INPUT',
    `request lacks input "${spec.name}" (got ${request.inputs.map((t) => `"${t.name}"`).join(', ') || 'none'})`,
    { details: { input: spec.name } },
  );
}

/**
 * One example's values per input: a Float32Array, or the raw little-endian float32 bytes when
 * they could not be viewed in place (packBatch copies either kind once, into the batch).
 */
export type ExampleValues = Float32Array | Buffer;

const valueCount = (values: ExampleValues) =>
  values instanceof Float32Array ? values.length : values.length / 4;

/** Index of the first NaN or ±Infinity, or -1. Reads raw bytes in place, without a copy. */
function firstNonFinite(values: ExampleValues): number {
  if (values instanceof Float32Array) {
    for (let i = 0; i < values.length; i++) if (!Number.isFinite(values[i])) return i;
    return -1;
  }
  const view = new DataView(values.buffer, values.byteOffset, values.length);
  for (let i = 0; i < values.length / 4; i++) {
    if (!Number.isFinite(view.getFloat32(i * 4, true))) return i;
  }
  return -1;
}

/**
 * Checks a decoded request against the model's input signature and returns each input's values,
 * ready to be packed into a batch. Every failure is a typed, per-record error so that one bad
 * request is dead-lettered without touching its neighbours.
 */
export function toExample(
  request: InferenceRequest,
  inputs: readonly TensorSpec[],
): Record<string, ExampleValues> {
  const single = inputs.length === 1;
  const known = new Set(inputs.map((s) => s.name));
  if (!single) {
    const unknown = request.inputs.find((t) => !known.has(t.name));
    if (unknown) {
      throw new StreamscoreError(
        'UNKNOWN_INPUT',
        `request has input "${unknown.name}" the model does not take (inputs: ${[...known].join(', ')})`,
        { details: { input: unknown.name } },
      );
    }
  } else if (request.inputs.length > 1) {
    throw new StreamscoreError(
      'UNKNOWN_INPUT',
      `model takes one input "${inputs[0]!.name}", request has ${request.inputs.length}`,
    );
  }

  const example: Record<string, ExampleValues> = {};
  for (const spec of inputs) {
    const tensor = findTensor(request, spec, single);
    if (!shapeFits(tensor.shape, spec.shape)) {
      throw new StreamscoreError(
        'WRONG_SHAPE',
        `input "${spec.name}" has shape ${describeShape(tensor.shape)}, the model expects ${describeShape(spec.shape)}`,
        { details: { input: spec.name, shape: tensor.shape, expected: spec.shape } },
      );
    }
    const values: ExampleValues = tensor.raw ?? tensor.data;
    if (valueCount(values) !== sizeOf(tensor.shape)) {
      throw new StreamscoreError(
        'WRONG_SHAPE',
        `input "${spec.name}" declares shape ${describeShape(tensor.shape)} (${sizeOf(tensor.shape)} values) but carries ${valueCount(values)}`,
        { details: { input: spec.name } },
      );
    }
    const bad = firstNonFinite(values);
    if (bad >= 0) {
      throw new StreamscoreError(
        'NON_FINITE',
        `input "${spec.name}" holds ${tensor.data[bad]} at index ${bad}; only finite values are scored`,
        { details: { input: spec.name, index: bad } },
      );
    }
    example[spec.name] = values;
  }
  return example;
}
