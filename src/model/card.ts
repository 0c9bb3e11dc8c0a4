/**
 * The model card: `card.json` beside every model version. It is the contract between whoever
 * trained the model and the worker that serves it: tensor names and shapes the codec relies on,
 * labels, how inputs were preprocessed, where the model came from, and a sha256 per model file so
 * a half-copied or tampered model is refused at load time rather than producing quiet garbage.
 */
import { z } from 'zod';
import { StreamscoreError } from '../errors.js';
import type { TensorSpec } from './types.js';

const SHA256_HEX = /^[0-9a-f]{64}$/;

/** Dimension of one example (no batch dimension). `null` = any size, as in `ExampleShape`. */
const dimSchema = z.number().int().positive().nullable();

export const tensorCardSchema = z.strictObject({
  /**
   * Tensor name as the worker sees it. For a layers model it must equal the Keras input/output
   * layer name (`model.inputNames` / `model.outputNames`); for a graph model, the signature name.
   */
  name: z.string().min(1),
  dtype: z.literal('float32'),
  shape: z.array(dimSchema),
  description: z.string().optional(),
});

/**
 * One column group of a model's input vector, in order: how the model was trained to see a field
 * of a domain record. The worker's field mapping (config `mappings`) takes its normalisation
 * constants and vocabularies from here, so they cannot drift from what training used.
 */
export const featureCardSchema = z.discriminatedUnion('kind', [
  z.strictObject({
    name: z.string().min(1),
    kind: z.literal('numeric'),
    /** The value fed is (x - mean) / std. */
    mean: z.number(),
    std: z.number().positive(),
    description: z.string().optional(),
  }),
  z.strictObject({
    name: z.string().min(1),
    kind: z.literal('oneHot'),
    /** One column per entry, in this order; a value not listed is all zeros. */
    vocabulary: z.array(z.string().min(1)).min(1),
    description: z.string().optional(),
  }),
]);

export const modelCardSchema = z.strictObject({
  name: z.string().regex(/^[a-z0-9][a-z0-9._-]*$/, 'lower-case letters, digits, ".", "_", "-"'),
  version: z.string().regex(/^[0-9]+$/, 'a decimal number, like the version directory'),
  description: z.string(),
  format: z.enum(['tfjs-layers', 'tfjs-graph']),
  inputs: z.array(tensorCardSchema).min(1),
  outputs: z.array(tensorCardSchema).min(1),
  labels: z.array(z.string()).optional(),
  /**
   * The input vector's layout by domain field, for models trained on records rather than raw
   * tensors: the columns of the (single) input, in order. Optional.
   */
  features: z.array(featureCardSchema).min(1).optional(),
  /** Human-readable: what a producer must do to raw data before sending it. */
  preprocessing: z.string(),
  training: z.looseObject({
    dataset: z.string(),
    source: z.string(),
    samples: z.number().int().nonnegative(),
    heldOutSamples: z.number().int().nonnegative(),
    seed: z.number().int(),
    script: z.string(),
  }),
  metrics: z.looseObject({
    heldOutAccuracy: z.number().min(0).max(1),
  }),
  /**
   * Only on a weight-quantised variant (scripts/quantize.ts): the weights.bin values are stored
   * as `dtype` (the tfjs manifest's `quantization`; tfjs dequantises to float32 on load), made
   * from model `sourceModel` version `sourceVersion`. Sizes are weights.bin bytes of each.
   */
  quantization: z
    .strictObject({
      dtype: z.enum(['float16', 'uint8']),
      sourceModel: z.string().min(1),
      sourceVersion: z.string().regex(/^[0-9]+$/),
      weightBytes: z.number().int().nonnegative(),
      sourceWeightBytes: z.number().int().nonnegative(),
    })
    .optional(),
  createdAt: z.iso.datetime({ offset: true }),
  /** Every model file (model.json, weight shards; not the card itself) → lower-case sha256 hex. */
  files: z
    .record(z.string().min(1), z.string().regex(SHA256_HEX, 'lower-case sha256 hex'))
    .refine((files) => Object.keys(files).length > 0, 'lists no files'),
});

export type TensorCard = z.infer<typeof tensorCardSchema>;
export type FeatureCard = z.infer<typeof featureCardSchema>;
export type ModelCard = z.infer<typeof modelCardSchema>;

/**
 * Validate parsed JSON as a model card. `source` (a path) only goes into the error.
 * Throws `MODEL_INVALID` listing every problem, not just the first.
 */
export function parseModelCard(json: unknown, source: string): ModelCard {
  const result = modelCardSchema.safeParse(json);
  if (!result.success) {
    throw new StreamscoreError(
      'MODEL_INVALID',
      `model card ${source} is invalid:\n${z.prettifyError(result.error)}`,
      {
        details: {
          file: source,
          issues: result.error.issues.map((i) => ({ path: i.path.join('.'), message: i.message })),
        },
      },
    );
  }
  const card = result.data;
  const names = [...card.inputs, ...card.outputs].map((t) => t.name);
  const duplicate = names.find((n, i) => names.indexOf(n) !== i);
  if (duplicate !== undefined) {
    throw new StreamscoreError(
      'MODEL_INVALID',
      `model card ${source} names tensor "${duplicate}" twice`,
      {
        details: { file: source, tensor: duplicate },
      },
    );
  }
  return card;
}

/** The card's tensors in the shape `ModelInfo` uses. */
export function toTensorSpecs(tensors: readonly TensorCard[]): TensorSpec[] {
  return tensors.map((t) => ({
    name: t.name,
    dtype: t.dtype,
    shape: [...t.shape],
    ...(t.description === undefined ? {} : { description: t.description }),
  }));
}
