/**
 * The training loop both training scripts use: one epoch at a time, in an order shuffled by our
 * own seeded PRNG (fit's `shuffle: true` uses Math.random), so a rerun on the same backend writes
 * the same weights. Returns the seconds spent training.
 */
import type * as tfjs from '@tensorflow/tfjs';
import { mulberry32, shuffleInPlace } from '../../src/model/digits-data.js';

export interface SeededFitOptions {
  epochs: number;
  batchSize: number;
  seed: number;
  /** Log loss and accuracy every this many epochs (and after the last). */
  logEvery: number;
}

export async function fitSeeded(
  tf: typeof tfjs,
  model: tfjs.LayersModel,
  xTrain: tfjs.Tensor,
  yTrain: tfjs.Tensor,
  { epochs, batchSize, seed, logEvery }: SeededFitOptions,
): Promise<number> {
  const order = Array.from({ length: xTrain.shape[0]! }, (_, i) => i);
  const random = mulberry32(seed);
  const started = performance.now();
  for (let epoch = 1; epoch <= epochs; epoch++) {
    const idx = tf.tensor1d(shuffleInPlace(order, random), 'int32');
    const xs = tf.gather(xTrain, idx);
    const ys = tf.gather(yTrain, idx);
    const history = await model.fit(xs, ys, { epochs: 1, batchSize, shuffle: false, verbose: 0 });
    tf.dispose([idx, xs, ys]);
    if (epoch % logEvery === 0 || epoch === epochs) {
      const loss = Number(history.history.loss?.[0]);
      const acc = Number(history.history.acc?.[0] ?? history.history.accuracy?.[0]);
      console.log(
        `epoch ${epoch}/${epochs}  loss ${loss.toFixed(4)}  train accuracy ${acc.toFixed(4)}`,
      );
    }
  }
  return (performance.now() - started) / 1000;
}
