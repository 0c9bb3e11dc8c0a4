/**
 * Model replicas in worker_threads: inference off the event loop.
 *
 * Why: tfjs runs a predict synchronously on the thread that calls it (wasm in Node is
 * single-threaded, see shared/README.md), so in-thread inference stalls everything else on the
 * event loop — Kafka heartbeats and fetches, produce callbacks, timers — for the length of each
 * batch. Each replica here is a Worker with its own tfjs engine, wasm instance and copy of the
 * weights (replica-thread.ts); N replicas also run N batches at once on N cores.
 *
 * Data: inputs are shared with the thread through SharedArrayBuffers (no copy when the caller
 * packs into one, one copy otherwise: see `shareInputs`); outputs are transferred back.
 *
 * Crashes: a replica thread that dies (uncaught error, process.exit, failed deserialisation) is
 * logged and replaced, and the batch it was running goes back to the head of the queue, up to
 * `maxCrashRetries` times; then it is rejected with `REPLICA_CRASHED`. A batch that kills every
 * replica it meets therefore costs a few restarts, not the pool. An exception thrown by the
 * model is not a crash: that predict is rejected with the StreamscoreError the thread raised
 * (code, message and details cross the thread boundary).
 */
import type { Worker } from 'node:worker_threads';
import { StreamscoreError, asStreamscoreError } from '../errors.js';
import type { Logger } from '../telemetry/logger.js';
import { startModuleThread } from '../util/thread.js';
import type { BackendPreference } from './backend.js';
import type {
  CrashMode,
  ReplicaReply,
  ReplicaRequest,
  ReplicaWorkerData,
  SerialisedError,
} from './replica-thread.js';
import type { BatchOutputs, ModelInfo, ModelRunner, PackedBatch } from './types.js';

export type { CrashMode } from './replica-thread.js';

export interface ReplicaPoolOptions {
  /** The model version directory to load (see `resolveModelDir`); every replica loads it. */
  modelDir: string;
  /** tfjs backend each replica selects for itself (see `selectBackend`). */
  backend: BackendPreference;
  /** Number of replica threads, ≥ 1; each holds its own copy of the weights. */
  replicas: number;
  log: Logger;
  /** How many times one batch is re-run after the replica running it died. Default 2. */
  maxCrashRetries?: number;
  /** How long `dispose()` waits for in-flight predicts before terminating threads. Default 10 s. */
  disposeTimeoutMs?: number;
  /** Tests only: make replicas die on purpose. Never set in production. */
  testHooks?: ReplicaPoolTestHooks;
}

export interface ReplicaPoolTestHooks {
  /**
   * Called in the pool before each predict is sent (`crashes`: how many replicas this batch has
   * killed so far). Returning a mode makes the receiving replica die as it gets the batch
   * ('exit': process.exit(70); 'throw': an uncaught exception). Replicas obey it only when the
   * pool was started with this hook.
   */
  crashOnDispatch?: (batch: PackedBatch, crashes: number) => CrashMode | undefined;
}

const DEFAULT_MAX_CRASH_RETRIES = 2;
const DEFAULT_DISPOSE_TIMEOUT_MS = 10_000;
/** Delay before retrying a replacement replica that failed to start: doubles up to the cap. */
const RESTART_BACKOFF_MS = 1_000;
const RESTART_BACKOFF_CAP_MS = 30_000;

function createThread(workerData: ReplicaWorkerData): Worker {
  return startModuleThread(import.meta.url, 'replica-thread', { workerData });
}

/**
 * Inputs as arrays that postMessage shares instead of copying. An array on a SharedArrayBuffer
 * (how the worker core packs batches) goes as is: no copy, and it is still there to re-send if
 * the replica dies mid-batch. Any other array is copied once into shared memory here. The
 * alternative, transferring its buffer, would save that copy but detach the caller's array
 * (and a subarray's whole parent buffer), and leave the pool nothing to re-send after a crash:
 * only shared inputs can be retried. The caller must not write to shared inputs until predict
 * settles.
 */
function shareInputs(inputs: Record<string, Float32Array>): Record<string, Float32Array> {
  const shared: Record<string, Float32Array> = {};
  for (const [name, values] of Object.entries(inputs)) {
    if (values.buffer instanceof SharedArrayBuffer) {
      shared[name] = values;
    } else {
      const copy = new Float32Array(new SharedArrayBuffer(values.byteLength));
      copy.set(values);
      shared[name] = copy;
    }
  }
  return shared;
}

/** Rebuild the thread's StreamscoreError; its stack inside the thread becomes the cause. */
function deserialiseError(e: SerialisedError): StreamscoreError {
  const remote = new Error(e.message);
  remote.name = e.name;
  if (e.stack !== undefined) remote.stack = e.stack;
  return new StreamscoreError(e.code, e.message, {
    details: e.details,
    retriable: e.retriable,
    cause: remote,
  });
}

type Request = { type: 'predict'; batch: PackedBatch } | { type: 'warmUp'; sizes: number[] };

interface Job {
  id: number;
  request: Request;
  /** Replicas this job was running on when they died. */
  crashes: number;
  /** Settles with the job; dispose waits on it. */
  done: Promise<unknown>;
  resolve(outputs: BatchOutputs): void;
  reject(err: Error): void;
}

interface Replica {
  /** 0 … replicas-1, kept by the replacement of a dead replica. */
  slot: number;
  worker: Worker;
  log: Logger;
  info?: ModelInfo;
  ready: boolean;
  /** The pool is terminating it on purpose: its exit is not a crash. */
  stopping: boolean;
  /** The job it is running, if any. */
  job?: Job;
  /** Work meant for this replica only (warm-up), taken before the shared queue. */
  own: Job[];
  lastError?: unknown;
  /** Set when its thread has exited. */
  exitCode?: number;
}

export class ReplicaPool implements ModelRunner {
  private readonly options: Required<Omit<ReplicaPoolOptions, 'testHooks'>>;
  private readonly hooks: ReplicaPoolTestHooks | undefined;
  private log: Logger;
  private modelInfo: ModelInfo | undefined;
  /** Ready replicas, idle or busy. */
  private live: Replica[] = [];
  /** Started, not yet ready (first start or replacement). */
  private readonly starting = new Set<Replica>();
  private readonly queue: Job[] = [];
  private readonly warmSizes = new Set<number>();
  private readonly timers = new Set<NodeJS.Timeout>();
  private nextJobId = 1;
  private closed = false;
  private closing: Promise<void> | undefined;

  private constructor(options: ReplicaPoolOptions) {
    this.options = {
      modelDir: options.modelDir,
      backend: options.backend,
      replicas: options.replicas,
      log: options.log,
      maxCrashRetries: options.maxCrashRetries ?? DEFAULT_MAX_CRASH_RETRIES,
      disposeTimeoutMs: options.disposeTimeoutMs ?? DEFAULT_DISPOSE_TIMEOUT_MS,
    };
    this.hooks = options.testHooks;
    this.log = options.log.child({ component: 'replica-pool' });
  }

  /** Start `replicas` threads and wait until every one has loaded the model. */
  static async start(options: ReplicaPoolOptions): Promise<ReplicaPool> {
    const { replicas, maxCrashRetries } = options;
    if (!Number.isSafeInteger(replicas) || replicas < 1) {
      throw new StreamscoreError(
        'CONFIG_INVALID',
        `replicas must be a positive integer, got ${replicas}`,
        { details: { replicas } },
      );
    }
    if (
      maxCrashRetries !== undefined &&
      (!Number.isSafeInteger(maxCrashRetries) || maxCrashRetries < 0)
    ) {
      throw new StreamscoreError(
        'CONFIG_INVALID',
        `maxCrashRetries must be a non-negative integer, got ${maxCrashRetries}`,
        { details: { maxCrashRetries } },
      );
    }
    const pool = new ReplicaPool(options);
    await pool.startAll();
    return pool;
  }

  /** The model as the first replica loaded it. */
  get info(): ModelInfo {
    if (this.modelInfo === undefined) throw new Error('ReplicaPool used before it started');
    return this.modelInfo;
  }

  /** Batches the pool runs at once: the configured number of replicas. */
  get concurrency(): number {
    return this.options.replicas;
  }

  /** Replicas ready now (fewer than configured while a dead one is being replaced). */
  get replicas(): number {
    return this.live.length;
  }

  /** Replicas running a batch now. */
  get busy(): number {
    return this.live.filter((r) => r.job !== undefined).length;
  }

  /**
   * Run one batch on an idle replica, or on the first to become idle (FIFO). Rejects with the
   * model's StreamscoreError, `REPLICA_CRASHED` after too many crashes, or `MODEL_FAILED` once
   * disposed.
   */
  predict(batch: PackedBatch): Promise<BatchOutputs> {
    if (this.closed) return Promise.reject(this.disposedError());
    let inputs: Record<string, Float32Array>;
    try {
      inputs = shareInputs(batch.inputs);
    } catch (err) {
      return Promise.reject(asStreamscoreError(err, 'MODEL_FAILED'));
    }
    return this.enqueue({ type: 'predict', batch: { size: batch.size, inputs } }, this.queue);
  }

  /**
   * Run one all-zero batch at each size on every replica. Replicas started later (replacements)
   * warm up at these sizes before they take work.
   */
  async warmUp(batchSizes: readonly number[] = [1]): Promise<void> {
    if (this.closed) throw this.disposedError();
    for (const size of batchSizes) this.warmSizes.add(size);
    await Promise.all(
      this.live.map((r) => this.enqueue({ type: 'warmUp', sizes: [...batchSizes] }, r.own)),
    );
  }

  /**
   * Reject queued work, wait (at most `disposeTimeoutMs`) for batches in flight, then terminate
   * every thread. Concurrent and repeated calls share one promise.
   */
  dispose(): Promise<void> {
    this.closing ??= this.close();
    return this.closing;
  }

  private async startAll(): Promise<void> {
    const slots = Array.from({ length: this.options.replicas }, (_, slot) => slot);
    const results = await Promise.allSettled(slots.map((slot) => this.spawn(slot)));
    const started = results.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
    // Replica 0's error if it failed, else the first failure in slot order.
    const failure = results.find((r) => r.status === 'rejected');
    if (failure !== undefined) {
      await Promise.all(started.map((r) => this.stop(r)));
      throw failure.reason;
    }
    // One that died while the others were still loading counts as a failed start.
    const died = started.find((r) => r.exitCode !== undefined);
    if (died !== undefined) {
      await Promise.all(started.map((r) => this.stop(r)));
      throw new StreamscoreError(
        'REPLICA_CRASHED',
        `model replica thread exited with code ${died.exitCode} during start-up`,
        { cause: died.lastError, details: { replica: died.slot, exitCode: died.exitCode } },
      );
    }
    const first = started[0]!;
    this.modelInfo = first.info!;
    this.log = this.log.child({ model: this.modelInfo.name, version: this.modelInfo.version });
    for (const replica of started) {
      const problem = this.differs(replica);
      if (problem !== undefined) {
        await Promise.all(started.map((r) => this.stop(r)));
        throw problem;
      }
    }
    this.live = started;
    this.log.info(
      { replicas: started.length, backend: this.modelInfo.backend },
      'model replicas ready',
    );
  }

  /** MODEL_INVALID when `replica` loaded a model other than the first replica's. */
  private differs(replica: Replica): StreamscoreError | undefined {
    const expected = JSON.stringify(this.modelInfo);
    const actual = JSON.stringify(replica.info);
    if (actual === expected) return undefined;
    return new StreamscoreError(
      'MODEL_INVALID',
      `model replica ${replica.slot} loaded a different model from ${this.options.modelDir}`,
      { details: { dir: this.options.modelDir, expected, actual } },
    );
  }

  /** Start one thread; resolves once it has loaded (and warmed up) the model. */
  private spawn(slot: number): Promise<Replica> {
    const worker = createThread({
      modelDir: this.options.modelDir,
      backend: this.options.backend,
      warmUpSizes: [...this.warmSizes],
      allowCrashForTests: this.hooks?.crashOnDispatch !== undefined,
    });
    const replica: Replica = {
      slot,
      worker,
      log: this.log.child({ replica: slot, threadId: worker.threadId }),
      ready: false,
      stopping: false,
      own: [],
    };
    this.starting.add(replica);
    return new Promise<Replica>((resolve, reject) => {
      // Rejects once the thread is gone, so a failed start leaves no thread behind.
      const failStart = (err: Error) => {
        if (!this.starting.delete(replica)) return;
        void this.stop(replica).then(() => reject(err));
      };
      worker.on('message', (reply: ReplicaReply) => {
        switch (reply.type) {
          case 'log':
            replica.log[reply.level](reply.fields, reply.msg);
            return;
          case 'ready':
            if (!this.starting.delete(replica)) return;
            replica.info = reply.info;
            replica.ready = true;
            resolve(replica);
            return;
          case 'startFailed':
            failStart(deserialiseError(reply.error));
            return;
          case 'result':
          case 'failed':
            this.settle(replica, reply);
            return;
        }
      });
      worker.on('error', (err) => {
        replica.lastError = err;
      });
      worker.on('messageerror', (err) => {
        // A message that cannot be deserialised leaves its batch unanswerable: treat as a crash.
        replica.lastError = err;
        replica.log.error({ err }, 'model replica sent a message that cannot be read');
        void worker.terminate();
      });
      worker.on('exit', (exitCode) => {
        replica.exitCode = exitCode;
        if (!replica.ready) {
          failStart(
            new StreamscoreError(
              'REPLICA_CRASHED',
              `model replica thread exited with code ${exitCode} while loading ${this.options.modelDir}` +
                (replica.lastError instanceof Error ? `: ${replica.lastError.message}` : ''),
              { cause: replica.lastError, details: { replica: slot, exitCode } },
            ),
          );
          return;
        }
        this.onExit(replica, exitCode);
      });
    });
  }

  private settle(replica: Replica, reply: Extract<ReplicaReply, { type: 'result' | 'failed' }>) {
    const job = replica.job;
    if (job === undefined || job.id !== reply.id) {
      replica.log.warn({ id: reply.id }, 'model replica answered a batch it was not running');
      return;
    }
    replica.job = undefined;
    if (reply.type === 'result') job.resolve(reply.outputs);
    else job.reject(deserialiseError(reply.error));
    this.dispatch();
  }

  private onExit(replica: Replica, exitCode: number): void {
    // Ready, but the pool is still waiting for the others: startAll sees `exitCode` and fails.
    if (this.modelInfo === undefined) return;
    this.live = this.live.filter((r) => r !== replica);
    const job = replica.job;
    replica.job = undefined;
    const orphans = replica.own.splice(0);
    // Any exit we did not ask for is a crash, code 0 included: the replica is gone either way.
    if (replica.stopping) {
      // Terminated on purpose (dispose): what it still held fails as disposed.
      if (job !== undefined) orphans.unshift(job);
      for (const j of orphans) j.reject(this.disposedError());
      return;
    }
    const batchSize = job?.request.type === 'predict' ? job.request.batch.size : undefined;
    replica.log.error(
      { exitCode, err: replica.lastError, batchSize, crashes: (job?.crashes ?? 0) + 1 },
      'model replica thread died',
    );
    const crashed = (what: string, crashes: number) =>
      new StreamscoreError(
        'REPLICA_CRASHED',
        `model replica thread died (exit code ${exitCode}) ${what}`,
        { cause: replica.lastError, details: { replica: replica.slot, exitCode, crashes } },
      );
    if (job !== undefined) {
      job.crashes += 1;
      const retry =
        !this.closed &&
        job.request.type === 'predict' &&
        job.crashes <= this.options.maxCrashRetries;
      if (retry) this.queue.unshift(job);
      else job.reject(crashed(`running this batch, ${job.crashes} time(s)`, job.crashes));
    }
    for (const j of orphans) j.reject(crashed('before its warm-up', 0));
    if (!this.closed) this.replace(replica.slot, 0);
    this.dispatch();
  }

  /** Start a replacement for `slot`; if that fails, try again later, backing off. */
  private replace(slot: number, failures: number): void {
    this.spawn(slot).then(
      (replica) => {
        const problem = this.differs(replica);
        if (this.closed || problem !== undefined) {
          void this.stop(replica);
          if (problem !== undefined) this.replaceFailed(slot, failures, problem);
          return;
        }
        this.live.push(replica);
        replica.log.info({ replicas: this.live.length }, 'model replica replaced');
        this.dispatch();
      },
      (err: unknown) => this.replaceFailed(slot, failures, err),
    );
  }

  private replaceFailed(slot: number, failures: number, err: unknown): void {
    if (this.closed) return;
    const retryInMs = Math.min(RESTART_BACKOFF_MS * 2 ** failures, RESTART_BACKOFF_CAP_MS);
    this.log.error({ err, replica: slot, retryInMs }, 'cannot start a replacement model replica');
    if (this.live.length === 0) {
      // Nothing can run the queue until a replacement starts: fail it now rather than hang.
      const reason = new StreamscoreError(
        'REPLICA_CRASHED',
        'no model replica is running and a replacement failed to start',
        { cause: err, details: { replica: slot } },
      );
      for (const job of this.queue.splice(0)) job.reject(reason);
    }
    const timer = setTimeout(() => {
      this.timers.delete(timer);
      if (!this.closed) this.replace(slot, failures + 1);
    }, retryInMs);
    this.timers.add(timer);
  }

  private enqueue(request: Request, queue: Job[]): Promise<BatchOutputs> {
    let resolve!: (outputs: BatchOutputs) => void;
    let reject!: (err: Error) => void;
    const promise = new Promise<BatchOutputs>((res, rej) => {
      resolve = res;
      reject = rej;
    });
    const done = promise.then(
      () => undefined,
      () => undefined,
    );
    queue.push({ id: this.nextJobId++, request, crashes: 0, done, resolve, reject });
    this.dispatch();
    return promise;
  }

  /** Give every idle replica its own work first, then the oldest shared job. */
  private dispatch(): void {
    for (const replica of this.live) {
      while (replica.job === undefined) {
        const job = replica.own.shift() ?? this.queue.shift();
        if (job === undefined) break;
        this.send(replica, job);
      }
    }
  }

  private send(replica: Replica, job: Job): void {
    let message: ReplicaRequest;
    if (job.request.type === 'predict') {
      const crash = this.hooks?.crashOnDispatch?.(job.request.batch, job.crashes);
      message = {
        type: 'predict',
        id: job.id,
        batch: job.request.batch,
        ...(crash === undefined ? {} : { crash }),
      };
    } else {
      message = { type: 'warmUp', id: job.id, sizes: job.request.sizes };
    }
    try {
      // Shared inputs are shared, not copied, by postMessage: no transfer list needed.
      replica.worker.postMessage(message);
      replica.job = job;
    } catch (err) {
      job.reject(asStreamscoreError(err, 'MODEL_FAILED'));
    }
  }

  /** Terminate on purpose; a replica still starting then rejects its start (see `spawn`). */
  private async stop(replica: Replica): Promise<void> {
    replica.stopping = true;
    try {
      await replica.worker.terminate();
    } catch (err) {
      replica.log.warn({ err }, 'terminating a model replica thread failed');
    }
  }

  private disposedError(): StreamscoreError {
    return new StreamscoreError(
      'MODEL_FAILED',
      `model ${this.modelInfo?.name ?? this.options.modelDir} is disposed`,
    );
  }

  private async close(): Promise<void> {
    this.closed = true;
    for (const timer of this.timers) clearTimeout(timer);
    this.timers.clear();
    for (const job of this.queue.splice(0)) job.reject(this.disposedError());
    for (const replica of this.live) {
      for (const job of replica.own.splice(0)) job.reject(this.disposedError());
    }
    const inFlight = this.live.flatMap((r) => (r.job === undefined ? [] : [r.job.done]));
    if (inFlight.length > 0) {
      let timer: NodeJS.Timeout | undefined;
      const timedOut = new Promise<void>((resolve) => {
        timer = setTimeout(resolve, this.options.disposeTimeoutMs);
      });
      await Promise.race([Promise.allSettled(inFlight), timedOut]);
      clearTimeout(timer);
    }
    // Batches still running are rejected by the 'exit' of their thread (stopping is set).
    const all = [...this.live, ...this.starting];
    this.live = [];
    await Promise.all(all.map((r) => this.stop(r)));
    this.log.info({ replicas: all.length }, 'model replicas stopped');
  }
}

/** Start a pool of model replicas (see `ReplicaPool`); rejects with the model's load error. */
export function startReplicaPool(options: ReplicaPoolOptions): Promise<ReplicaPool> {
  return ReplicaPool.start(options);
}
