/**
 * Every error streamscore raises on purpose carries a stable `code` so callers, dead-letter
 * headers and metrics can branch on it without reading message text.
 */
export type ErrorCode =
  // configuration, raised at start
  | 'CONFIG_INVALID'
  | 'CONFIG_FILE_UNREADABLE'
  // per-record input problems: the record can never be processed, it goes to the dead-letter topic
  | 'DECODE_FAILED'
  | 'PAYLOAD_TOO_LARGE'
  | 'EMPTY_PAYLOAD'
  | 'UNKNOWN_INPUT'
  | 'MISSING_INPUT'
  | 'WRONG_SHAPE'
  | 'NON_FINITE'
  | 'UNKNOWN_MODEL'
  | 'UNKNOWN_MODEL_VERSION'
  /** Confluent-framed record whose schema id the registry does not know. */
  | 'UNKNOWN_SCHEMA_ID'
  /** The record's writer schema cannot be read as the worker's reader schema. */
  | 'SCHEMA_MISMATCH'
  /** A domain record's field cannot become the model input (null without ifNull, not finite). */
  | 'MAPPING_FAILED'
  // per-record processing failures
  | 'MODEL_FAILED'
  /** A model replica thread died while running the batch, more often than the pool retries. */
  | 'REPLICA_CRASHED'
  | 'ENCODE_FAILED'
  // model loading
  | 'MODEL_NOT_FOUND'
  | 'MODEL_INVALID'
  | 'CHECKSUM_MISMATCH'
  | 'BACKEND_UNAVAILABLE'
  // infrastructure
  | 'KAFKA_UNAVAILABLE'
  /** The Schema Registry cannot be reached or answered with a server error (retried). */
  | 'REGISTRY_UNAVAILABLE'
  | 'TOPIC_MISSING'
  | 'KAFKA_SEND_FAILED'
  /** The broker refused a record for good (too large, invalid): resending it cannot succeed. */
  | 'KAFKA_RECORD_REJECTED'
  /** Another producer with the same identity took over (fenced epoch, transactional id). */
  | 'KAFKA_FENCED'
  /** A transaction's commit was asked for and no answer came: the broker may have committed it. */
  | 'KAFKA_COMMIT_UNCERTAIN'
  | 'LOCAL_BROKER_FAILED'
  /** The local Schema Registry for tests and the demo (no Java 21, fetch failed, did not start). */
  | 'LOCAL_REGISTRY_FAILED'
  /** The health and metrics HTTP server cannot listen (port in use, address not available). */
  | 'HTTP_UNAVAILABLE';

/** Dead-letter category: operators act differently on bad input than on failures of ours. */
export type ErrorCategory = 'unprocessable' | 'failed';

export interface StreamscoreErrorOptions {
  retriable?: boolean;
  cause?: unknown;
  /** Structured details (key path, file, expected shape...) for logs and dead-letter headers. */
  details?: Record<string, unknown>;
}

export class StreamscoreError extends Error {
  readonly code: ErrorCode;
  readonly retriable: boolean;
  readonly details: Record<string, unknown>;

  constructor(code: ErrorCode, message: string, options: StreamscoreErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'StreamscoreError';
    this.code = code;
    this.retriable = options.retriable ?? false;
    this.details = options.details ?? {};
  }
}

const UNPROCESSABLE: ReadonlySet<ErrorCode> = new Set<ErrorCode>([
  'DECODE_FAILED',
  'PAYLOAD_TOO_LARGE',
  'EMPTY_PAYLOAD',
  'UNKNOWN_INPUT',
  'MISSING_INPUT',
  'WRONG_SHAPE',
  'NON_FINITE',
  'UNKNOWN_MODEL',
  'UNKNOWN_MODEL_VERSION',
  'UNKNOWN_SCHEMA_ID',
  'SCHEMA_MISMATCH',
  'MAPPING_FAILED',
]);

export function categoryOf(code: ErrorCode): ErrorCategory {
  return UNPROCESSABLE.has(code) ? 'unprocessable' : 'failed';
}

export function isStreamscoreError(err: unknown): err is StreamscoreError {
  return err instanceof StreamscoreError;
}

/** Wrap anything thrown by a dependency so it carries a code; keeps the original as `cause`. */
export function asStreamscoreError(err: unknown, fallback: ErrorCode): StreamscoreError {
  if (err instanceof StreamscoreError) return err;
  const message = err instanceof Error ? err.message : String(err);
  return new StreamscoreError(fallback, message, { cause: err });
}
