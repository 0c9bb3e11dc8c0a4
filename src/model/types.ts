import type { FeatureCard } from './card.js';
/** Shape of one example, without the batch dimension. `null` means "any size" (rare). */
export type ExampleShape = readonly (number | null)[];

export interface TensorSpec {
  name: string;
  dtype: 'float32';
  shape: ExampleShape;
  description?: string;
}

export interface ModelInfo {
  name: string;
  version: string;
  inputs: readonly TensorSpec[];
  outputs: readonly TensorSpec[];
  labels?: readonly string[];
  /** The card's input layout by domain field (card `features`), for field mappings. */
  features?: readonly FeatureCard[];
  /** The tfjs backend that runs this model: 'tensorflow' (native, CPU or CUDA), 'wasm' or 'cpu'. */
  backend: string;
}

/**
 * A packed batch: for each input name, `size` examples laid end to end in one Float32Array
 * (row-major, batch dimension first), ready to become one tensor without further copies.
 */
export interface PackedBatch {
  size: number;
  inputs: Record<string, Float32Array>;
}

/** Outputs of one batch, keyed by output name, each `size * exampleSize` values. */
export type BatchOutputs = Record<string, Float32Array>;

/**
 * One runner pinned for one batch (a hot-swappable model): every predict of the batch, narrowing
 * included, goes to `model`, and its results are labelled with `model.info`. Release it once.
 */
export interface ModelLease {
  readonly model: ModelRunner;
  release(): void;
}

/** The model edge: the worker core only ever sees this, never tfjs. */
export interface ModelRunner {
  readonly info: ModelInfo;
  /** Batches it can run at once (replicas); the worker keeps this many in flight. Default 1. */
  readonly concurrency?: number;
  predict(batch: PackedBatch): Promise<BatchOutputs>;
  dispose(): Promise<void>;
  /** Optional: pins the runner for one batch (see ModelLease); without it the runner is itself. */
  lease?(): ModelLease;
}
