import { createRequire } from 'node:module';
import { describe, expect, it } from 'vitest';
import { selectBackend } from '../../src/model/backend.js';
import { recordingLogger } from './helpers.js';
import { rejection } from '../helpers/errors.js';

const require = createRequire(import.meta.url);
function installed(pkg: string): boolean {
  try {
    require.resolve(pkg);
    return true;
  } catch {
    return false;
  }
}
const nativeInstalled =
  installed('@tensorflow/tfjs-node-gpu') || installed('@tensorflow/tfjs-node');

describe('selectBackend', () => {
  // First in the file, so the wasm module is initialised here and not by an earlier test.
  it('activates wasm on request, without leaving Emscripten process handlers behind', async () => {
    const before =
      process.listeners('uncaughtException').length +
      process.listeners('unhandledRejection').length;
    const log = recordingLogger();
    const selected = await selectBackend('wasm', log);
    expect(selected).toMatchObject({ backend: 'wasm', package: '@tensorflow/tfjs-backend-wasm' });
    expect(selected.tf.getBackend()).toBe('wasm');
    expect(
      process.listeners('uncaughtException').length +
        process.listeners('unhandledRejection').length,
    ).toBe(before);
    // The backend computes: a real op runs on it.
    const sum = selected.tf.tidy(() => selected.tf.tensor1d([1, 2, 3]).sum().dataSync()[0]);
    expect(sum).toBe(6);
  });

  it.skipIf(nativeInstalled)(
    'picks wasm under auto when no native package is installed, logging why',
    async () => {
      const log = recordingLogger();
      const selected = await selectBackend('auto', log);
      expect(selected.backend).toBe('wasm');
      expect(selected.tf.getBackend()).toBe('wasm');

      const skipped = log.records.filter((r) => r.level === 'debug').map((r) => r.obj);
      expect(skipped).toEqual([
        expect.objectContaining({ package: '@tensorflow/tfjs-node-gpu', reason: 'not installed' }),
        expect.objectContaining({ package: '@tensorflow/tfjs-node', reason: 'not installed' }),
      ]);
      const chosen = log.records.filter((r) => r.level === 'info');
      expect(chosen).toHaveLength(1);
      expect(chosen[0]!.obj).toMatchObject({
        backend: 'wasm',
        package: '@tensorflow/tfjs-backend-wasm',
      });
    },
  );

  it.runIf(nativeInstalled)(
    'picks the native backend under auto when a native package is installed',
    async () => {
      const selected = await selectBackend('auto', recordingLogger());
      expect(selected.backend).toBe('tensorflow');
    },
  );

  it.skipIf(installed('@tensorflow/tfjs-node'))(
    'refuses an explicit "tensorflow" preference, naming the package and the config key',
    async () => {
      const err = await rejection(selectBackend('tensorflow', recordingLogger()));
      expect(err.code).toBe('BACKEND_UNAVAILABLE');
      expect(err.details).toMatchObject({
        package: '@tensorflow/tfjs-node',
        configKey: 'model.backend',
      });
      expect(err.message).toContain('install @tensorflow/tfjs-node ');
      expect(err.message).toContain('model.backend');
    },
  );

  it.skipIf(installed('@tensorflow/tfjs-node-gpu'))(
    'refuses "tensorflow-gpu" naming tfjs-node-gpu',
    async () => {
      const err = await rejection(selectBackend('tensorflow-gpu', recordingLogger()));
      expect(err.code).toBe('BACKEND_UNAVAILABLE');
      expect(err.details['package']).toBe('@tensorflow/tfjs-node-gpu');
    },
  );

  it('switches to the JavaScript cpu backend on request and back to wasm', async () => {
    const cpu = await selectBackend('cpu', recordingLogger());
    expect(cpu).toMatchObject({ backend: 'cpu', package: '@tensorflow/tfjs-backend-cpu' });
    expect(cpu.tf.getBackend()).toBe('cpu');
    const wasm = await selectBackend('wasm', recordingLogger());
    expect(wasm.tf.getBackend()).toBe('wasm');
  });

  it('rejects an unknown preference', async () => {
    const err = await rejection(selectBackend('webgpu' as never, recordingLogger()));
    expect(err.code).toBe('BACKEND_UNAVAILABLE');
  });
});
