import type { ExampleValues } from '../codec/examples.js';
import type { InferenceResult, NamedTensor } from '../codec/types.js';
import type { BatchOutputs, ModelInfo, PackedBatch, TensorSpec } from '../model/types.js';

/**
 * Packs per-request examples into one Float32Array per input: the only copy of the values (the
 * codec hands them over as views into the Kafka record, or as raw bytes), no per-value JS. The memory is a SharedArrayBuffer, so a model replica in another thread reads it without a
 * copy and the batch survives that replica crashing.
 */
export function packBatch(
  batch: readonly { example: Record<string, ExampleValues> }[],
  inputs: readonly TensorSpec[],
): PackedBatch {
  const packed: Record<string, Float32Array> = {};
  for (const spec of inputs) {
    const first = batch[0]?.example[spec.name];
    const width = first ? first.byteLength / 4 : 0;
    const memory = new SharedArrayBuffer(width * batch.length * 4);
    const floats = new Float32Array(memory);
    const bytes = new Uint8Array(memory);
    batch.forEach((item, i) => {
      const values = item.example[spec.name]!;
      if (values instanceof Float32Array) floats.set(values, i * width);
      else bytes.set(values, i * width * 4); // raw little-endian bytes: one copy, no decoding
    });
    packed[spec.name] = floats;
  }
  return { size: batch.length, inputs: packed };
}

function argmax(values: Float32Array): number {
  let best = 0;
  for (let i = 1; i < values.length; i++) if (values[i]! > values[best]!) best = i;
  return best;
}

/**
 * The i-th example's outputs as views into the batch outputs (no copy), plus the top label when
 * the model card lists labels matching the first output's width.
 */
export function resultFor(
  outputs: BatchOutputs,
  index: number,
  size: number,
  info: ModelInfo,
): Pick<InferenceResult, 'outputs' | 'label' | 'labelIndex' | 'score'> {
  const tensors: NamedTensor[] = info.outputs.map((spec) => {
    const all = outputs[spec.name];
    if (!all) throw new Error(`model returned no output "${spec.name}"`);
    const width = all.length / size;
    const shape = spec.shape.map((d) => d ?? width);
    return { name: spec.name, shape, data: all.subarray(index * width, (index + 1) * width) };
  });
  const first = tensors[0];
  if (!first || !info.labels || info.labels.length !== first.data.length) {
    return { outputs: tensors, label: null, labelIndex: null, score: null };
  }
  const labelIndex = argmax(first.data);
  return {
    outputs: tensors,
    label: info.labels[labelIndex] ?? null,
    labelIndex,
    score: first.data[labelIndex]!,
  };
}
