/**
 * The body of one model replica: a worker_threads Worker started by replica-pool.ts. It selects
 * its own tfjs backend and loads its own copy of the model (tfjs state is per thread: each
 * replica has its own engine, wasm instance and weights), says `ready` with the model's info,
 * then answers one `predict` at a time. Inputs arrive shared (SharedArrayBuffer) from the pool;
 * output buffers are transferred back, not copied.
 *
 * This module only runs inside a Worker. The pool imports nothing from it but types.
 */
import { parentPort, workerData } from 'node:worker_threads';
import type { ErrorCode } from '../errors.js';
import { asStreamscoreError } from '../errors.js';
import type { BackendPreference } from './backend.js';
import { selectBackend } from './backend.js';
import { loadModel } from './repository.js';
import type { TfjsModelRunner } from './tfjs-runner.js';
import type { BatchOutputs, ModelInfo, PackedBatch } from './types.js';

/** How a replica dies on purpose, for the pool's crash tests (see `ReplicaPoolOptions`). */
export type CrashMode = 'exit' | 'throw';

export interface ReplicaWorkerData {
  modelDir: string;
  backend: BackendPreference;
  /** Warm up at these batch sizes before saying `ready` (a restarted replica takes no cold hit). */
  warmUpSizes: number[];
  /** Obey the `crash` field of predict messages. Only the pool's test hook sets it. */
  allowCrashForTests: boolean;
}

/** A StreamscoreError flattened for postMessage: code, message and details survive the hop. */
export interface SerialisedError {
  name: string;
  message: string;
  code: ErrorCode;
  details: Record<string, unknown>;
  retriable: boolean;
  stack?: string;
}

export type ReplicaRequest =
  | { type: 'predict'; id: number; batch: PackedBatch; crash?: CrashMode }
  | { type: 'warmUp'; id: number; sizes: number[] };

export type ReplicaReply =
  | { type: 'ready'; info: ModelInfo }
  | { type: 'startFailed'; error: SerialisedError }
  | { type: 'result'; id: number; outputs: BatchOutputs }
  | { type: 'failed'; id: number; error: SerialisedError }
  | { type: 'log'; level: 'debug' | 'info' | 'warn'; fields: object; msg?: string };

/** Errors become plain objects; anything else postMessage cannot clone is dropped by JSON. */
function plain(value: object): Record<string, unknown> {
  return JSON.parse(
    JSON.stringify(value, (_key, v: unknown) =>
      v instanceof Error ? { type: v.name, message: v.message, stack: v.stack } : v,
    ),
  ) as Record<string, unknown>;
}

function serialiseError(err: unknown, fallback: 'MODEL_FAILED' | 'MODEL_INVALID'): SerialisedError {
  const e = asStreamscoreError(err, fallback);
  return {
    name: e.name,
    message: e.message,
    code: e.code,
    details: plain(e.details),
    retriable: e.retriable,
    ...(e.stack === undefined ? {} : { stack: e.stack }),
  };
}

/** The buffers of `outputs`, each made transferable: a view into a larger or shared buffer is copied. */
function transferable(outputs: BatchOutputs): { outputs: BatchOutputs; transfer: ArrayBuffer[] } {
  const seen = new Set<ArrayBufferLike>();
  const transfer: ArrayBuffer[] = [];
  const own: BatchOutputs = {};
  for (const [name, values] of Object.entries(outputs)) {
    const whole =
      values.buffer instanceof ArrayBuffer &&
      values.byteOffset === 0 &&
      values.byteLength === values.buffer.byteLength &&
      !seen.has(values.buffer);
    const out = whole ? values : values.slice();
    seen.add(out.buffer);
    transfer.push(out.buffer as ArrayBuffer);
    own[name] = out;
  }
  return { outputs: own, transfer };
}

function main(): void {
  const port = parentPort;
  if (port === null) {
    throw new Error('replica-thread runs only inside a worker_threads Worker (see replica-pool)');
  }
  const data = workerData as ReplicaWorkerData;
  const post = (reply: ReplicaReply, transfer: ArrayBuffer[] = []) =>
    port.postMessage(reply, transfer);
  // The pool logs these with its own logger (level, destination, redaction), tagged per replica.
  const at =
    (level: 'debug' | 'info' | 'warn') =>
    (fields: object, msg?: string): void =>
      post({ type: 'log', level, fields: plain(fields), ...(msg === undefined ? {} : { msg }) });
  const log = { debug: at('debug'), info: at('info'), warn: at('warn') };

  const crash = (mode: CrashMode): void => {
    if (mode === 'exit') process.exit(70);
    // Thrown from the message listener: an uncaught exception, which ends the thread.
    throw new Error('replica crashed on purpose (test hook)');
  };

  const serve = (runner: TfjsModelRunner, request: ReplicaRequest): void => {
    if (request.type === 'predict' && request.crash !== undefined) {
      if (data.allowCrashForTests) crash(request.crash);
      else log.warn({ crash: request.crash }, 'ignored a crash request: not started for tests');
    }
    const work =
      request.type === 'predict'
        ? runner.predict(request.batch)
        : runner.warmUp(request.sizes).then((): BatchOutputs => ({}));
    work.then(
      (outputs) => {
        const reply = transferable(outputs);
        post({ type: 'result', id: request.id, outputs: reply.outputs }, reply.transfer);
      },
      (err: unknown) =>
        post({ type: 'failed', id: request.id, error: serialiseError(err, 'MODEL_FAILED') }),
    );
  };

  void (async () => {
    let runner: TfjsModelRunner;
    try {
      const selected = await selectBackend(data.backend, log);
      runner = await loadModel(data.modelDir, {
        tf: selected.tf,
        backend: selected.backend,
        log,
      });
      if (data.warmUpSizes.length > 0) await runner.warmUp(data.warmUpSizes);
    } catch (err) {
      // Nothing else keeps this thread alive: it ends once the message is sent.
      post({ type: 'startFailed', error: serialiseError(err, 'MODEL_INVALID') });
      return;
    }
    port.on('message', (request: ReplicaRequest) => serve(runner, request));
    post({ type: 'ready', info: runner.info });
  })();
}

main();
