/**
 * tf.io handlers for a model directory on local disk.
 *
 * Pure @tensorflow/tfjs only knows http(s) and browser storage; `file://` is added by tfjs-node,
 * which cannot be installed everywhere (it downloads libtensorflow at install time). These
 * handlers read and write the same layout tfjs-node and the Python converter produce:
 * `model.json` (topology + weightsManifest) and weight shards named in the manifest.
 */
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { StreamscoreError } from '../errors.js';

export const MODEL_JSON = 'model.json';
export const WEIGHTS_BIN = 'weights.bin';

export interface FileSystemLoaderOptions {
  /**
   * Reads a file named relative to the model directory. Defaults to reading from disk; the
   * repository passes one that serves bytes it has already checked against the card, so what is
   * verified is exactly what is loaded.
   */
  readFile?: (relativePath: string) => Promise<Uint8Array>;
}

/**
 * Resolve a file name found in model.json against the model directory, refusing names that
 * would escape it (`../`, absolute paths): a model directory may come from elsewhere.
 */
export function resolveInside(dir: string, relativePath: string): string {
  const root = path.resolve(dir);
  const full = path.resolve(root, relativePath);
  if (path.isAbsolute(relativePath) || !full.startsWith(root + path.sep)) {
    throw new StreamscoreError('MODEL_INVALID', `model file "${relativePath}" is outside ${root}`, {
      details: { dir: root, file: relativePath },
    });
  }
  return full;
}

/** `Uint8Array` → a standalone ArrayBuffer holding exactly its bytes (Buffers share pools). */
function toArrayBuffer(bytes: Uint8Array): ArrayBuffer {
  const copy = new Uint8Array(bytes.byteLength);
  copy.set(bytes);
  return copy.buffer;
}

function isNotFound(err: unknown): boolean {
  return err instanceof Error && (err as NodeJS.ErrnoException).code === 'ENOENT';
}

/** An IOHandler whose `load()` reads `dir/model.json` and every weight shard it names. */
export function fileSystemLoader(
  dir: string,
  options: FileSystemLoaderOptions = {},
): tf.io.IOHandler {
  const read =
    options.readFile ?? ((relativePath: string) => readFile(resolveInside(dir, relativePath)));
  return {
    async load(): Promise<tf.io.ModelArtifacts> {
      let text: string;
      try {
        text = new TextDecoder().decode(await read(MODEL_JSON));
      } catch (err) {
        if (isNotFound(err)) {
          throw new StreamscoreError('MODEL_NOT_FOUND', `no ${MODEL_JSON} in ${dir}`, {
            cause: err,
            details: { dir, file: MODEL_JSON },
          });
        }
        throw err;
      }
      let modelJson: tf.io.ModelJSON;
      try {
        modelJson = JSON.parse(text) as tf.io.ModelJSON;
      } catch (err) {
        throw new StreamscoreError('MODEL_INVALID', `${MODEL_JSON} in ${dir} is not JSON`, {
          cause: err,
          details: { dir, file: MODEL_JSON },
        });
      }
      if (typeof modelJson !== 'object' || modelJson === null || modelJson.modelTopology == null) {
        throw new StreamscoreError(
          'MODEL_INVALID',
          `${MODEL_JSON} in ${dir} has no modelTopology`,
          {
            details: { dir, file: MODEL_JSON },
          },
        );
      }
      return tf.io.getModelArtifactsForJSON(modelJson, async (manifest) => {
        const shards: ArrayBuffer[] = [];
        // Shards are concatenated in manifest order: that is the layout weightSpecs describe.
        for (const group of manifest) {
          for (const shard of group.paths) {
            try {
              shards.push(toArrayBuffer(await read(shard)));
            } catch (err) {
              if (isNotFound(err)) {
                throw new StreamscoreError(
                  'MODEL_NOT_FOUND',
                  `weight file ${shard} missing in ${dir}`,
                  {
                    cause: err,
                    details: { dir, file: shard },
                  },
                );
              }
              throw err;
            }
          }
        }
        return [tf.io.getWeightSpecs(manifest), tf.io.concatenateArrayBuffers(shards)];
      });
    },
  };
}

/**
 * An IOHandler whose `save()` writes `dir/model.json` and all weights as one `weights.bin`
 * (small models; the loader above also reads multi-shard models). Creates `dir` if needed.
 */
export function fileSystemSaver(dir: string): tf.io.IOHandler {
  return {
    async save(artifacts: tf.io.ModelArtifacts): Promise<tf.io.SaveResult> {
      if (artifacts.modelTopology instanceof ArrayBuffer) {
        throw new StreamscoreError('MODEL_INVALID', 'binary model topologies are not supported');
      }
      await mkdir(dir, { recursive: true });
      const weightData =
        artifacts.weightData === undefined
          ? new ArrayBuffer(0)
          : tf.io.concatenateArrayBuffers(artifacts.weightData);
      const manifest: tf.io.WeightsManifestConfig = [
        { paths: [WEIGHTS_BIN], weights: artifacts.weightSpecs ?? [] },
      ];
      // The same fields, in the same order, as tfjs's own getModelJSONForModelArtifacts (not
      // exported from @tensorflow/tfjs), so files match what tfjs-node's file:// handler writes.
      const modelJson: tf.io.ModelJSON = {
        modelTopology: artifacts.modelTopology as object,
        format: artifacts.format,
        generatedBy: artifacts.generatedBy,
        convertedBy: artifacts.convertedBy,
        weightsManifest: manifest,
      };
      if (artifacts.signature != null) modelJson.signature = artifacts.signature;
      if (artifacts.userDefinedMetadata != null)
        modelJson.userDefinedMetadata = artifacts.userDefinedMetadata;
      if (artifacts.modelInitializer != null)
        modelJson.modelInitializer = artifacts.modelInitializer;
      if (artifacts.initializerSignature != null)
        modelJson.initializerSignature = artifacts.initializerSignature;
      if (artifacts.trainingConfig != null) modelJson.trainingConfig = artifacts.trainingConfig;
      await writeFile(path.join(dir, WEIGHTS_BIN), new Uint8Array(weightData));
      await writeFile(path.join(dir, MODEL_JSON), JSON.stringify(modelJson));
      return { modelArtifactsInfo: tf.io.getModelArtifactsInfoForJSON(artifacts) };
    },
  };
}
