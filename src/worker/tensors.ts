import type { InferenceResult, NamedTensor } from '../codec/types.js';
import type { BatchOutputs, ModelInfo, PackedBatch, TensorSpec } from '../model/types.js';

/**
 * Packs per-request examples into one Float32Array per input: one copy per example, no per-value
 * JS. The memory is a SharedArrayBuffer, so a model replica in another thread reads it without a
 * copy and the batch survives that replica crashing.
 */
export function packBatch(
  batch: readonly { example: Record<string, Float32Array> }[],
  inputs: readonly TensorSpec[],
): PackedBatch {
  const packed: Record<string, Float32Array> = {};
  for (const spec of inputs) {
    const first = batch[0]?.example[spec.name];
    const width = first?.length ?? 0;
    const data = new Float32Array(new SharedArrayBuffer(width * batch.length * 4));
    batch.forEach((item, i) => data.set(item.example[spec.name]!, i * width));
    packed[spec.name] = data;
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
