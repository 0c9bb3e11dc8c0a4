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
 * Checks a decoded request against the model's input signature and returns one Float32Array per
 * input, ready to be packed into a batch. Every failure is a typed, per-record error so that one
 * bad request is dead-lettered without touching its neighbours.
 */
export function toExample(
  request: InferenceRequest,
  inputs: readonly TensorSpec[],
): Record<string, Float32Array> {
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

  const example: Record<string, Float32Array> = {};
  for (const spec of inputs) {
    const tensor = findTensor(request, spec, single);
    if (!shapeFits(tensor.shape, spec.shape)) {
      throw new StreamscoreError(
        'WRONG_SHAPE',
        `input "${spec.name}" has shape ${describeShape(tensor.shape)}, the model expects ${describeShape(spec.shape)}`,
        { details: { input: spec.name, shape: tensor.shape, expected: spec.shape } },
      );
    }
    if (tensor.data.length !== sizeOf(tensor.shape)) {
      throw new StreamscoreError(
        'WRONG_SHAPE',
        `input "${spec.name}" declares shape ${describeShape(tensor.shape)} (${sizeOf(tensor.shape)} values) but carries ${tensor.data.length}`,
        { details: { input: spec.name } },
      );
    }
    for (let i = 0; i < tensor.data.length; i++) {
      if (!Number.isFinite(tensor.data[i])) {
        throw new StreamscoreError(
          'NON_FINITE',
          `input "${spec.name}" holds ${tensor.data[i]} at index ${i}; only finite values are scored`,
          { details: { input: spec.name, index: i } },
        );
      }
    }
    example[spec.name] = tensor.data;
  }
  return example;
}
