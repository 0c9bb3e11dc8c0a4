/**
 * Why a `ScoringClient.score()` call did not resolve with a result. Shaped like
 * `StreamscoreError` (a stable `code`, `retriable`, `details`) so callers branch on the code, never
 * on message text; a class of its own because these codes describe the caller's side of the
 * conversation, not the worker's.
 */
export type ScoringErrorCode =
  /** The worker answered with a dead letter: `workerCode` and `workerMessage` say why. */
  | 'DEAD_LETTERED'
  /** No result or dead letter arrived within the timeout. */
  | 'TIMEOUT'
  /** The client was closed before the answer arrived (or `score()` was called after close). */
  | 'CLIENT_CLOSED'
  /** The request could not be produced to its topic (the producer gave up). */
  | 'SEND_FAILED'
  /** Another request with the same id is still waiting for its answer on this client. */
  | 'DUPLICATE_ID'
  /** A result with this request's correlation id arrived but the codec could not decode it. */
  | 'RESULT_UNREADABLE';

export interface ScoringErrorOptions {
  cause?: unknown;
  /** The dead letter's `streamscore.error.code` header, e.g. `WRONG_SHAPE`. */
  workerCode?: string;
  /** The dead letter's `streamscore.error.message` header. */
  workerMessage?: string;
  /** The dead letter's `streamscore.error.category` header: `unprocessable` or `failed`. */
  category?: string;
  /** Every header of the dead letter, as text (source topic, partition, offset, …). */
  headers?: Record<string, string>;
}

export class ScoringError extends Error {
  readonly code: ScoringErrorCode;
  /** The request id (the correlation id) this error answers. */
  readonly requestId: string;
  /** Whether sending the same request again can succeed (a timeout or a failed send can). */
  readonly retriable: boolean;
  readonly workerCode: string | undefined;
  readonly workerMessage: string | undefined;
  readonly category: string | undefined;
  readonly headers: Record<string, string>;

  constructor(
    code: ScoringErrorCode,
    requestId: string,
    message: string,
    options: ScoringErrorOptions = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'ScoringError';
    this.code = code;
    this.requestId = requestId;
    this.retriable = code === 'TIMEOUT' || code === 'SEND_FAILED';
    this.workerCode = options.workerCode;
    this.workerMessage = options.workerMessage;
    this.category = options.category;
    this.headers = options.headers ?? {};
  }
}

export function isScoringError(err: unknown): err is ScoringError {
  return err instanceof ScoringError;
}
