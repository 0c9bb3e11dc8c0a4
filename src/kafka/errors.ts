/**
 * kafkajs errors → typed StreamscoreErrors, so the send path can branch on what a failure means
 * rather than on message text:
 *
 * - `KAFKA_RECORD_REJECTED` (not retriable): the broker refused the records themselves
 *   (MESSAGE_TOO_LARGE, INVALID_RECORD, CORRUPT_MESSAGE, …). Sending the same bytes again fails
 *   again; the sender isolates the offending records instead of stalling.
 * - `KAFKA_FENCED` (not retriable): another producer with our identity took over (fenced epoch,
 *   transactional id). This producer must stop; retrying cannot help.
 * - `KAFKA_UNAVAILABLE` (retriable): the broker or a leader is unreachable, a request timed out,
 *   kafkajs ran out of its own retries on a transient problem. Never skip records: wait.
 * - `KAFKA_SEND_FAILED`: anything else; retriable unless the error says it is not (kafkajs's own
 *   rule: an error is retriable unless `retriable === false`).
 *
 * kafkajs wraps: KafkaJSNumberOfRetriesExceeded and the retrier's KafkaJSNonRetriableError carry
 * the original error as `cause`; the protocol error (with `type`) is found by walking that chain.
 */
import { StreamscoreError } from '../errors.js';

/** Protocol error types that reject the records sent, not the connection or the producer. */
const RECORD_REJECTIONS: ReadonlySet<string> = new Set([
  'MESSAGE_TOO_LARGE',
  'RECORD_LIST_TOO_LARGE',
  'INVALID_RECORD',
  'CORRUPT_MESSAGE',
  'INVALID_TIMESTAMP',
  'UNSUPPORTED_FOR_MESSAGE_FORMAT',
]);

/** Protocol error types that mean this producer's identity was taken over. */
const FENCING: ReadonlySet<string> = new Set([
  'PRODUCER_FENCED',
  'INVALID_PRODUCER_EPOCH',
  'TRANSACTION_COORDINATOR_FENCED',
  'TRANSACTIONAL_ID_AUTHORIZATION_FAILED',
  'INVALID_PRODUCER_ID_MAPPING',
  'FENCED_INSTANCE_ID',
]);

/** kafkajs error names that mean "could not reach or hear from the broker". */
const UNREACHABLE_NAMES: ReadonlySet<string> = new Set([
  'KafkaJSConnectionError',
  'KafkaJSConnectionClosedError',
  'KafkaJSRequestTimeoutError',
  'KafkaJSNoBrokerAvailableError',
  'KafkaJSBrokerNotFound',
  'KafkaJSMetadataNotLoaded',
  'KafkaJSTopicMetadataNotLoaded',
  'KafkaJSNumberOfRetriesExceeded',
]);

interface KafkaLikeError {
  name?: unknown;
  message?: unknown;
  type?: unknown;
  retriable?: unknown;
  cause?: unknown;
}

const MAX_CHAIN = 8;

/** The error and its causes, outermost first (bounded, cycle-safe). */
function causeChain(err: unknown): KafkaLikeError[] {
  const chain: KafkaLikeError[] = [];
  let current: unknown = err;
  while (current !== null && typeof current === 'object' && chain.length < MAX_CHAIN) {
    if (chain.includes(current as KafkaLikeError)) break;
    chain.push(current as KafkaLikeError);
    current = (current as KafkaLikeError).cause;
  }
  return chain;
}

/** The protocol error type (e.g. 'MESSAGE_TOO_LARGE') anywhere in the cause chain, if any. */
export function kafkaErrorType(err: unknown): string | undefined {
  for (const e of causeChain(err)) if (typeof e.type === 'string') return e.type;
  return undefined;
}

/** Maps anything the producer (or consumer) threw to a StreamscoreError with a Kafka code. */
export function classifyKafkaError(err: unknown): StreamscoreError {
  if (err instanceof StreamscoreError) return err;
  const chain = causeChain(err);
  const outer = chain[0];
  const type = kafkaErrorType(err);
  const name = typeof outer?.name === 'string' ? outer.name : undefined;
  const message =
    outer && typeof outer.message === 'string' && outer.message !== ''
      ? outer.message
      : String(err);
  const details: Record<string, unknown> = {};
  if (type !== undefined) details.kafkaType = type;
  if (name !== undefined) details.kafkaError = name;
  const options = { cause: err, details };

  if (type !== undefined && RECORD_REJECTIONS.has(type)) {
    return new StreamscoreError(
      'KAFKA_RECORD_REJECTED',
      `broker rejected the records (${type}): ${message}`,
      { ...options, retriable: false },
    );
  }
  if (type !== undefined && FENCING.has(type)) {
    return new StreamscoreError('KAFKA_FENCED', `producer fenced (${type}): ${message}`, {
      ...options,
      retriable: false,
    });
  }
  // Transient if any layer says so: kafkajs marks the outer "retries exceeded" wrapper
  // non-retriable even when what it gave up on (a connection, a leader election) is transient.
  const transient = chain.some(
    (e) => e.retriable === true || (typeof e.name === 'string' && UNREACHABLE_NAMES.has(e.name)),
  );
  if (transient) {
    return new StreamscoreError('KAFKA_UNAVAILABLE', `Kafka unavailable: ${message}`, {
      ...options,
      retriable: true,
    });
  }
  return new StreamscoreError('KAFKA_SEND_FAILED', `Kafka send failed: ${message}`, {
    ...options,
    retriable: !chain.some((e) => e.retriable === false),
  });
}

/** True when resending the same records cannot succeed: the broker refused the records. */
export function isRecordRejection(err: unknown): boolean {
  return classifyKafkaError(err).code === 'KAFKA_RECORD_REJECTED';
}
