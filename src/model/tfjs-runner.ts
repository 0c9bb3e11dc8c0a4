/**
 * The tfjs adapter behind `ModelRunner`: one packed Float32Array per input becomes one tensor
 * (no per-element copies in JS), one `predict` call per batch, outputs read back as
 * Float32Arrays keyed by the card's output names. Every tensor it creates is disposed before
 * `predict` returns, whatever happens.
 */
import type * as tfjs from '@tensorflow/tfjs';
import { StreamscoreError, asStreamscoreError } from '../errors.js';
import type { ModelCard } from './card.js';
import { toTensorSpecs } from './card.js';
import type { BatchOutputs, ExampleShape, ModelInfo, ModelRunner, PackedBatch } from './types.js';

type Tf = typeof tfjs;
export type TfjsModel = tfjs.LayersModel | tfjs.GraphModel;

export interface TfjsModelRunnerOptions {
  tf: Tf;
  model: TfjsModel;
  card: ModelCard;
  /** Active tfjs backend name, for `info.backend`. */
  backend: string;
}

/** Product of the known dimensions, and the index of the single `null` one if any. */
function shapeInfo(name: string, shape: ExampleShape): { known: number; free: number | null } {
  let known = 1;
  let free: number | null = null;
  shape.forEach((d, i) => {
    if (d === null) {
      if (free !== null) {
        throw new StreamscoreError(
          'MODEL_INVALID',
          `input "${name}" has more than one free dimension`,
          {
            details: { tensor: name, shape },
          },
        );
      }
      free = i;
    } else {
      known *= d;
    }
  });
  return { known, free };
}

export class TfjsModelRunner implements ModelRunner {
  readonly info: ModelInfo;
  private readonly tf: Tf;
  private readonly model: TfjsModel;
  private readonly inputShapes: {
    name: string;
    shape: ExampleShape;
    known: number;
    free: number | null;
  }[];
  private readonly outputNames: string[];
  private disposed = false;

  constructor(options: TfjsModelRunnerOptions) {
    const { tf, model, card, backend } = options;
    this.tf = tf;
    this.model = model;
    this.info = {
      name: card.name,
      version: card.version,
      inputs: toTensorSpecs(card.inputs),
      outputs: toTensorSpecs(card.outputs),
      ...(card.labels === undefined ? {} : { labels: [...card.labels] }),
      ...(card.features === undefined ? {} : { features: card.features }),
      backend,
    };
    this.inputShapes = card.inputs.map((t) => ({
      name: t.name,
      shape: t.shape,
      ...shapeInfo(t.name, t.shape),
    }));
    this.outputNames = card.outputs.map((t) => t.name);
  }

  async predict(batch: PackedBatch): Promise<BatchOutputs> {
    if (this.disposed)
      throw new StreamscoreError('MODEL_FAILED', `model ${this.info.name} is disposed`);
    const { size } = batch;
    if (!Number.isSafeInteger(size) || size < 1) {
      throw new StreamscoreError(
        'WRONG_SHAPE',
        `batch size must be a positive integer, got ${size}`,
        {
          details: { size },
        },
      );
    }
    const shapes = this.batchShapes(batch);
    for (const name of Object.keys(batch.inputs)) {
      if (!this.inputShapes.some((s) => s.name === name)) {
        throw new StreamscoreError(
          'UNKNOWN_INPUT',
          `model ${this.info.name} has no input "${name}"`,
          {
            details: { input: name },
          },
        );
      }
    }

    const tf = this.tf;
    let outputs: tfjs.Tensor[] = [];
    try {
      outputs = tf.tidy(() => {
        const xs = this.inputShapes.map((s, i) =>
          tf.tensor(batch.inputs[s.name]!, shapes[i], 'float32'),
        );
        const result = this.predictTensors(xs);
        if (result.length !== this.outputNames.length) {
          throw new Error(
            `model returned ${result.length} outputs, the card names ${this.outputNames.length}`,
          );
        }
        return result;
      });
      const values = await Promise.all(outputs.map((t) => t.data()));
      const out: BatchOutputs = {};
      this.outputNames.forEach((name, i) => {
        const v = values[i]!;
        out[name] = v instanceof Float32Array ? v : Float32Array.from(v as ArrayLike<number>);
      });
      return out;
    } catch (err) {
      throw asStreamscoreError(err, 'MODEL_FAILED');
    } finally {
      for (const t of outputs) t.dispose();
    }
  }

  /** Run one all-zero batch at each size so kernels and buffers are set up before real traffic. */
  async warmUp(batchSizes: readonly number[] = [1]): Promise<void> {
    for (const size of batchSizes) {
      const inputs: Record<string, Float32Array> = {};
      for (const s of this.inputShapes) {
        if (s.free !== null) {
          throw new StreamscoreError(
            'MODEL_INVALID',
            `cannot warm up input "${s.name}" with a free dimension`,
          );
        }
        inputs[s.name] = new Float32Array(size * s.known);
      }
      await this.predict({ size, inputs });
    }
  }

  async dispose(): Promise<void> {
    if (this.disposed) return;
    this.disposed = true;
    this.model.dispose();
  }

  /** [size, ...exampleShape] per input, checking each packed array's length. */
  private batchShapes(batch: PackedBatch): number[][] {
    return this.inputShapes.map((s) => {
      const data = batch.inputs[s.name];
      if (data === undefined) {
        throw new StreamscoreError('MISSING_INPUT', `batch has no input "${s.name}"`, {
          details: { input: s.name },
        });
      }
      const perExample = batch.size * s.known;
      const fits =
        s.free === null
          ? data.length === perExample
          : perExample > 0 && data.length % perExample === 0;
      if (!fits) {
        const expected = s.free === null ? String(perExample) : `a multiple of ${perExample}`;
        throw new StreamscoreError(
          'WRONG_SHAPE',
          `input "${s.name}" has ${data.length} values; batch of ${batch.size} × shape [${s.shape.join(', ')}] needs ${expected}`,
          { details: { input: s.name, size: batch.size, shape: s.shape, length: data.length } },
        );
      }
      const shape = s.shape.map((d) => (d === null ? data.length / perExample : d));
      return [batch.size, ...shape];
    });
  }

  private predictTensors(xs: tfjs.Tensor[]): tfjs.Tensor[] {
    const model = this.model;
    if (model instanceof this.tf.GraphModel) {
      // Graph models take inputs by signature name; names were checked against the card at load.
      const feed: tfjs.NamedTensorMap = {};
      this.inputShapes.forEach((s, i) => (feed[s.name] = xs[i]!));
      const result = model.predict(feed);
      return this.orderOutputs(result);
    }
    const result = model.predict(xs.length === 1 ? xs[0]! : xs);
    return this.orderOutputs(result);
  }

  private orderOutputs(result: tfjs.Tensor | tfjs.Tensor[] | tfjs.NamedTensorMap): tfjs.Tensor[] {
    if (result instanceof this.tf.Tensor) return [result];
    if (Array.isArray(result)) return result;
    return this.outputNames.map((name) => {
      const t = result[name];
      if (t === undefined) throw new Error(`model returned no output "${name}"`);
      return t;
    });
  }
}
