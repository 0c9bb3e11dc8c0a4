/**
 * Picks the fastest tfjs backend this machine can run, once, at start.
 *
 * Order under 'auto' (fastest first): native TensorFlow with CUDA (@tensorflow/tfjs-node-gpu),
 * native TensorFlow on CPU (@tensorflow/tfjs-node), WebAssembly with SIMD
 * (@tensorflow/tfjs-backend-wasm, single-threaded in Node), then the plain JavaScript 'cpu'
 * backend, 20–36× slower than wasm on dense models (see shared/README.md).
 *
 * The native packages are optional dependencies whose install downloads libtensorflow; they are
 * often absent, so they are only ever imported dynamically, by a specifier TypeScript does not
 * resolve. They register their 'tensorflow' backend on the @tensorflow/tfjs they import; that
 * must be the same copy as ours (both pin 4.22.0, so npm dedupes them), and this module checks it.
 */
import { createRequire } from 'node:module';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { StreamscoreError } from '../errors.js';

export type BackendPreference = 'auto' | 'tensorflow-gpu' | 'tensorflow' | 'wasm' | 'cpu';

/** The part of a pino logger this module uses. */
export interface BackendLogger {
  info(obj: object, msg?: string): void;
  debug(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
}

export interface SelectedBackend {
  tf: typeof tf;
  /** tfjs backend name: 'tensorflow', 'wasm' or 'cpu'. */
  backend: string;
  /** The npm package that provides it. */
  package: string;
}

interface Candidate {
  preference: Exclude<BackendPreference, 'auto'>;
  backend: string;
  package: string;
  activate(): Promise<void>;
}

const require = createRequire(import.meta.url);

/** Import a package TypeScript must not resolve at compile time (it may not be installed). */
const importOptional = (specifier: string): Promise<unknown> => import(specifier);

/** True when `err` says `pkg` itself is not installed (not that something inside it failed). */
function isMissingPackage(err: unknown, pkg: string): boolean {
  if (!(err instanceof Error)) return false;
  const code = (err as NodeJS.ErrnoException).code;
  return (
    (code === 'ERR_MODULE_NOT_FOUND' || code === 'MODULE_NOT_FOUND') &&
    err.message.includes(`'${pkg}'`)
  );
}

async function activate(backend: string): Promise<void> {
  // setBackend resolves false (rather than throwing) when the backend's factory fails.
  const ok = await tf.setBackend(backend);
  if (!ok) throw new Error(`tf.setBackend('${backend}') failed to initialise the backend`);
  await tf.ready();
}

function nativeCandidate(preference: 'tensorflow-gpu' | 'tensorflow', pkg: string): Candidate {
  return {
    preference,
    backend: 'tensorflow',
    package: pkg,
    async activate() {
      await importOptional(pkg);
      // Importing registers 'tensorflow' on the tfjs-core copy the package imported. If that is
      // not our copy, our tf would still run wasm/cpu while claiming native: refuse instead.
      if (tf.findBackendFactory('tensorflow') === null) {
        throw new Error(
          `${pkg} loaded but registered its backend on another copy of @tensorflow/tfjs-core; ` +
            'run `npm dedupe` so both use the same @tensorflow/tfjs',
        );
      }
      await activate('tensorflow');
    },
  };
}

const wasmCandidate: Candidate = {
  preference: 'wasm',
  backend: 'wasm',
  package: '@tensorflow/tfjs-backend-wasm',
  async activate() {
    const wasm = await import('@tensorflow/tfjs-backend-wasm');
    // The .wasm binaries sit next to the package's JS; without an explicit path the Emscripten
    // loader looks in the current directory. setWasmPaths throws once the backend is
    // initialised, and the path cannot change then anyway.
    if (tf.engine().registry['wasm'] === undefined) {
      const dist = path.join(
        path.dirname(require.resolve('@tensorflow/tfjs-backend-wasm/package.json')),
        'dist',
      );
      wasm.setWasmPaths(dist + path.sep);
    }
    await withoutEmscriptenProcessHandlers(() => activate('wasm'));
  },
};

const PROCESS_EVENTS = ['uncaughtException', 'unhandledRejection'] as const;

/**
 * The Emscripten glue in tfjs-backend-wasm adds process 'uncaughtException' and
 * 'unhandledRejection' listeners that rethrow. With them, any later uncaught error in the worker
 * is printed as the whole minified glue line instead of its stack, and an application handler
 * for graceful shutdown never gets to finish. Remove exactly the listeners that appeared while
 * the backend initialised; Node's defaults (crash with the stack) then apply again.
 */
async function withoutEmscriptenProcessHandlers(fn: () => Promise<void>): Promise<void> {
  const emitter: NodeJS.EventEmitter = process;
  const before = PROCESS_EVENTS.map((event) => new Set(emitter.listeners(event)));
  try {
    await fn();
  } finally {
    PROCESS_EVENTS.forEach((event, i) => {
      for (const listener of emitter.listeners(event)) {
        if (!before[i]!.has(listener))
          emitter.removeListener(event, listener as (...args: unknown[]) => void);
      }
    });
  }
}

const cpuCandidate: Candidate = {
  preference: 'cpu',
  backend: 'cpu',
  package: '@tensorflow/tfjs-backend-cpu',
  activate: () => activate('cpu'),
};

const CANDIDATES: readonly Candidate[] = [
  nativeCandidate('tensorflow-gpu', '@tensorflow/tfjs-node-gpu'),
  nativeCandidate('tensorflow', '@tensorflow/tfjs-node'),
  wasmCandidate,
  cpuCandidate,
];

/**
 * Make the best available backend (or the one asked for) tfjs's active backend and return it.
 * An explicit preference that cannot be met throws `BACKEND_UNAVAILABLE`; 'auto' always ends
 * with at least the JavaScript 'cpu' backend.
 */
export async function selectBackend(
  preference: BackendPreference,
  log: BackendLogger,
): Promise<SelectedBackend> {
  const candidates =
    preference === 'auto' ? CANDIDATES : CANDIDATES.filter((c) => c.preference === preference);
  const first = candidates[0];
  if (first === undefined) {
    throw new StreamscoreError(
      'BACKEND_UNAVAILABLE',
      `unknown backend preference "${String(preference)}"`,
      {
        details: { preference, configKey: 'model.backend' },
      },
    );
  }
  for (const candidate of candidates) {
    try {
      await candidate.activate();
    } catch (err) {
      const missing = isMissingPackage(err, candidate.package);
      const reason = missing ? 'not installed' : err instanceof Error ? err.message : String(err);
      if (preference !== 'auto') {
        throw new StreamscoreError(
          'BACKEND_UNAVAILABLE',
          `model.backend is "${preference}" but ${candidate.package} ${missing ? 'is not installed' : 'failed to load'}` +
            ` (${reason}); install ${candidate.package} or set model.backend to "auto"`,
          {
            cause: err,
            details: { preference, package: candidate.package, configKey: 'model.backend' },
          },
        );
      }
      const fields = { backend: candidate.backend, package: candidate.package, reason };
      // A package that is absent is the normal case here; one that is present but broken (no
      // libtensorflow, no CUDA) is worth an operator's attention.
      if (missing) log.debug(fields, 'tfjs backend not available, trying the next');
      else log.warn({ ...fields, err }, 'tfjs backend failed to load, trying the next');
      continue;
    }
    log.info(
      { backend: candidate.backend, package: candidate.package, preference },
      'tfjs backend selected',
    );
    return { tf, backend: candidate.backend, package: candidate.package };
  }
  // Unreachable in practice: the JavaScript cpu backend ships inside @tensorflow/tfjs.
  throw new StreamscoreError('BACKEND_UNAVAILABLE', 'no tfjs backend could be initialised', {
    details: { preference, configKey: 'model.backend' },
  });
}
