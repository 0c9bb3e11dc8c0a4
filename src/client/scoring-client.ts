/**
 * A request/response client over the worker's topics: `score(record)` produces a request with a
 * correlation id and resolves with the matching result from the result topic, rejects with the
 * dead-letter reason, or times out. Many requests may be in flight at once.
 *
 * The client talks to Kafka through a `ScoringTransport` (kafka-transport.ts for the real thing),
 * so the correlation logic — pending requests, timeouts, matching answers — runs without a broker.
 */
import { randomUUID } from 'node:crypto';
import type { Kafka } from 'kafkajs';
import type { Logger } from '../telemetry/logger.js';
import { silentLogger } from '../telemetry/logger.js';
import { HEADER } from '../worker/headers.js';
import { ScoringError } from './errors.js';
import { kafkajsTransport } from './kafka-transport.js';

/**
 * What the client needs from a topic's codec (`ClientCodec` from src/codec/topics.ts has this
 * shape): where requests go and results come from, and how records become bytes and back.
 */
export interface ScoringCodec {
  /** The request topic. */
  readonly topic: string;
  /** Where the worker writes this topic's results. */
  readonly resultTopic: string;
  /** The request field that carries the correlation id (`id` for InferenceRequest). */
  readonly idField: string;
  encodeRequest(record: object): Promise<Buffer>;
  decodeResult(value: Buffer): Promise<Record<string, unknown>>;
}

/** One request as the transport produces it to `codec.topic`. */
export interface OutgoingRequest {
  key: string | Buffer | null;
  value: Buffer;
  headers: Record<string, string | Buffer>;
}

/** A record read from the result or a dead-letter topic. */
export interface Answer {
  kind: 'result' | 'deadLetter';
  value: Buffer | null;
  headers: Record<string, Buffer | string | undefined>;
}

/** The client's edge to Kafka. */
export interface ScoringTransport {
  /**
   * Starts delivering every record of the result and dead-letter topics written from now on to
   * `onAnswer`, in order per partition, and resolves once nothing written after it resolved can
   * be missed.
   */
  start(onAnswer: (answer: Answer) => Promise<void>): Promise<void>;
  /** Produces the requests; rejects when the producer gives up on them. */
  send(requests: OutgoingRequest[]): Promise<void>;
  /** Stops reading and producing. Called once. */
  close(): Promise<void>;
}

export interface ScoringClientOptions {
  /** Bootstrap brokers (host:port); or pass `kafka`. */
  brokers?: string[];
  /** A kafkajs client to use instead of one made from `brokers`. */
  kafka?: Kafka;
  codec: ScoringCodec;
  /**
   * The worker's `topics.deadLetter` (and `topics.failed`, when that is set): where requests it
   * cannot answer go.
   */
  deadLetterTopic: string | readonly string[];
  /** How long `score()` waits for an answer, from the call. Default 30,000 ms. */
  timeoutMs?: number;
  /**
   * Consumer group for reading answers. Default: a new unique group per client (deleted again by
   * `close()`). Answers are not shared between members: never give two clients the same group.
   */
  groupId?: string;
  /** Kafka client id when the client is made from `brokers`. Default `streamscore-client`. */
  clientId?: string;
  /** How long `connect()` waits for the consumer to join its group. Default 60,000 ms. */
  connectTimeoutMs?: number;
  log?: Logger;
}

export interface ScoreOptions {
  /** Record key (partitioning, copied to the result). Default: the request id. */
  key?: string | Buffer | null;
  /** Overrides the client's timeout for this request. */
  timeoutMs?: number;
  /** Aborting rejects the call with the signal's reason; a late answer is ignored. */
  signal?: AbortSignal;
  /** More headers for the request record. */
  headers?: Record<string, string | Buffer>;
}

export const DEFAULT_TIMEOUT_MS = 30_000;
/** Most requests in one produce call: the rest of a burst goes in the next one. */
const MAX_SEND_BATCH = 1000;

interface Pending {
  id: string;
  settled: boolean;
  resolve(result: Record<string, unknown>): void;
  reject(error: unknown): void;
  /** Clears the timer and the abort listener. */
  release(): void;
}

interface Queued {
  entry: Pending;
  request: OutgoingRequest;
}

const headerText = (value: Buffer | string | undefined): string | undefined =>
  value === undefined ? undefined : Buffer.isBuffer(value) ? value.toString('utf8') : value;

export class ScoringClient {
  private readonly pending = new Map<string, Pending>();
  private readonly queue: Queued[] = [];
  private flushing = false;
  private closed = false;
  private closing: Promise<void> | null = null;
  private readonly timeoutMs: number;
  private readonly log: Logger;

  private constructor(
    private readonly transport: ScoringTransport,
    readonly codec: ScoringCodec,
    options: { timeoutMs?: number; log?: Logger },
  ) {
    this.timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    this.log = (options.log ?? silentLogger).child({
      component: 'scoring-client',
      topic: codec.topic,
    });
  }

  /**
   * Connects to Kafka and resolves once the client's consumer has joined its group with its
   * positions at the current end of the result and dead-letter topics: the answer to any request
   * sent after this resolves is read.
   */
  static async connect(options: ScoringClientOptions): Promise<ScoringClient> {
    const transport = kafkajsTransport(options);
    return ScoringClient.withTransport(transport, options);
  }

  /** A client over any transport (tests, other brokers); starts it. */
  static async withTransport(
    transport: ScoringTransport,
    options: { codec: ScoringCodec; timeoutMs?: number; log?: Logger },
  ): Promise<ScoringClient> {
    const client = new ScoringClient(transport, options.codec, options);
    await transport.start((answer) => client.onAnswer(answer));
    return client;
  }

  /** Requests sent (or being sent) whose answer has not arrived yet. */
  get inFlight(): number {
    return this.pending.size;
  }

  /**
   * Sends `record` as a request and resolves with the decoded result. The id field is filled
   * with a random UUID when the record has none. Rejects with a `ScoringError`: DEAD_LETTERED
   * (the worker's code and message in `workerCode`/`workerMessage`), TIMEOUT, CLIENT_CLOSED,
   * SEND_FAILED, DUPLICATE_ID, RESULT_UNREADABLE; or with the codec's error when the record
   * does not fit the request schema, or the signal's reason when aborted.
   */
  async score(record: object, options: ScoreOptions = {}): Promise<Record<string, unknown>> {
    const { idField } = this.codec;
    const given = (record as Record<string, unknown>)[idField];
    const hasId = given !== undefined && given !== null && given !== '';
    const id = hasId ? String(given as string | number) : randomUUID();
    const request = hasId ? record : { ...record, [idField]: id };
    if (this.closed) {
      throw new ScoringError('CLIENT_CLOSED', id, `the scoring client is closed (request ${id})`);
    }
    options.signal?.throwIfAborted();
    if (this.pending.has(id)) {
      throw new ScoringError(
        'DUPLICATE_ID',
        id,
        `request ${id} is already waiting for its answer on this client`,
      );
    }

    const answer = new Promise<Record<string, unknown>>((resolve, reject) => {
      const timeoutMs = options.timeoutMs ?? this.timeoutMs;
      const timer = setTimeout(() => {
        this.settle(entry, () =>
          reject(
            new ScoringError('TIMEOUT', id, `no answer to request ${id} within ${timeoutMs} ms`),
          ),
        );
      }, timeoutMs);
      const onAbort = () => this.settle(entry, () => reject(options.signal!.reason));
      options.signal?.addEventListener('abort', onAbort, { once: true });
      const entry: Pending = {
        id,
        settled: false,
        resolve,
        reject,
        release: () => {
          clearTimeout(timer);
          options.signal?.removeEventListener('abort', onAbort);
        },
      };
      this.pending.set(id, entry);
    });

    const entry = this.pending.get(id)!;
    try {
      const value = await this.codec.encodeRequest(request);
      if (!entry.settled) {
        this.enqueue({
          entry,
          request: {
            key: options.key === undefined ? id : options.key,
            value,
            headers: { ...options.headers },
          },
        });
      }
    } catch (err) {
      this.settle(entry, () => entry.reject(err));
    }
    return answer;
  }

  /**
   * Rejects every pending call with CLIENT_CLOSED and disconnects. Safe to call more than once;
   * every call returns the same promise.
   */
  close(): Promise<void> {
    this.closing ??= this.shutdown();
    return this.closing;
  }

  private async shutdown(): Promise<void> {
    this.closed = true;
    for (const entry of [...this.pending.values()]) {
      this.settle(entry, () =>
        entry.reject(
          new ScoringError(
            'CLIENT_CLOSED',
            entry.id,
            `the scoring client was closed before request ${entry.id} was answered`,
          ),
        ),
      );
    }
    this.queue.length = 0;
    try {
      await this.transport.close();
    } catch (err) {
      this.log.warn({ err }, 'closing the scoring client failed');
    }
  }

  /** Runs `outcome` once per request, whichever comes first: answer, timeout, abort, close. */
  private settle(entry: Pending, outcome: () => void): void {
    if (entry.settled) return;
    entry.settled = true;
    entry.release();
    if (this.pending.get(entry.id) === entry) this.pending.delete(entry.id);
    outcome();
  }

  private enqueue(item: Queued): void {
    this.queue.push(item);
    // Wait one turn of the event loop before the first send, so a burst of score() calls made
    // together goes out in one produce request; later ones collect while a send is in flight.
    if (!this.flushing) {
      this.flushing = true;
      setImmediate(() => void this.flush());
    }
  }

  /** One produce request at a time, each with everything queued meanwhile (up to a cap). */
  private async flush(): Promise<void> {
    try {
      while (this.queue.length > 0 && !this.closed) {
        // Requests that timed out or were aborted while queued are not sent at all.
        const batch = this.queue.splice(0, MAX_SEND_BATCH).filter((q) => !q.entry.settled);
        if (batch.length === 0) continue;
        try {
          await this.transport.send(batch.map((q) => q.request));
        } catch (err) {
          this.log.warn({ err, requests: batch.length }, 'sending requests failed');
          for (const { entry } of batch) {
            this.settle(entry, () =>
              entry.reject(
                new ScoringError(
                  'SEND_FAILED',
                  entry.id,
                  `request ${entry.id} could not be sent: ${(err as Error).message}`,
                  { cause: err },
                ),
              ),
            );
          }
        }
      }
    } finally {
      this.flushing = false;
    }
  }

  private async onAnswer(answer: Answer): Promise<void> {
    const id = headerText(answer.headers[HEADER.correlationId]);
    if (id === undefined) return;
    const entry = this.pending.get(id);
    // Not ours: another client's answer, or one that already timed out (or a duplicate).
    if (entry === undefined || entry.settled) return;

    if (answer.kind === 'deadLetter') {
      const headers: Record<string, string> = {};
      for (const [name, value] of Object.entries(answer.headers)) {
        const text = headerText(value);
        if (text !== undefined) headers[name] = text;
      }
      // The dead-letter topic serves every request topic: an equal id from another one is not ours.
      const source = headers[HEADER.sourceTopic];
      if (source !== undefined && source !== this.codec.topic) return;
      const workerCode = headers[HEADER.errorCode] ?? 'UNKNOWN';
      const workerMessage = headers[HEADER.errorMessage] ?? '';
      this.settle(entry, () =>
        entry.reject(
          new ScoringError(
            'DEAD_LETTERED',
            id,
            `request ${id} was dead-lettered: ${workerCode}: ${workerMessage}`,
            { workerCode, workerMessage, category: headers[HEADER.errorCategory], headers },
          ),
        ),
      );
      return;
    }

    // Leave the map now so a duplicate of this result is ignored while it is being decoded.
    this.pending.delete(id);
    let result: Record<string, unknown>;
    try {
      if (answer.value === null) throw new Error('the result record has no value');
      result = await this.codec.decodeResult(answer.value);
    } catch (err) {
      this.settle(entry, () =>
        entry.reject(
          new ScoringError(
            'RESULT_UNREADABLE',
            id,
            `the result of request ${id} cannot be decoded: ${(err as Error).message}`,
            { cause: err },
          ),
        ),
      );
      return;
    }
    this.settle(entry, () => entry.resolve(result));
  }
}
