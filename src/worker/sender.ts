import type { Clock } from '../batching/clock.js';
import { StreamscoreError } from '../errors.js';
import { classifyKafkaError } from '../kafka/errors.js';
import type { OutboundRecord, RecordSink } from '../kafka/types.js';

export interface SenderOptions {
  sink: RecordSink;
  clock: Clock;
  /** Largest combined send; one group larger than this is still sent alone. */
  maxSendBytes: number;
  maxSendRecords: number;
  /**
   * A send failed; it will be retried after `retryInMs`. `error` is `err` classified (e.g.
   * KAFKA_UNAVAILABLE while the broker is unreachable).
   */
  onRetry?: (err: unknown, attempt: number, retryInMs: number, error: StreamscoreError) => void;
  /** A send succeeded after `failedAttempts` failed ones: the broker is reachable again. */
  onRecovered?: (failedAttempts: number) => void;
  /**
   * The broker refused these records for good (KAFKA_RECORD_REJECTED: too large, invalid), each
   * isolated from the records sent with it. Returns what to send in their place, at their place in
   * the queue (e.g. a dead letter for a refused result; nothing to drop them). Without this option
   * refused records are retried like any other failure, forever.
   */
  onRejected?: (records: OutboundRecord[], error: StreamscoreError) => OutboundRecord[];
  /**
   * Called each time the broker refused a request, before its halves are sent. With kafkajs's
   * idempotent producer this must start a new producer (new producer id): kafkajs rolls back the
   * sequence numbers of every partition of a refused request, including partitions the broker did
   * append, so any different resend to those partitions fails with OUT_OF_ORDER_SEQUENCE_NUMBER
   * forever. (The records the broker appended are then written again: at-least-once duplicates.)
   */
  beforeIsolating?: (error: StreamscoreError) => Promise<void>;
  /** Replacements refused again MAX_REPLACEMENTS deep are dropped and reported here. */
  onDropped?: (records: OutboundRecord[], error: StreamscoreError) => void;
  /**
   * Records larger than this (key, value and headers) are refused before they are sent, as the
   * broker would refuse them (its max.message.bytes), and handed to `onRejected` in place: no
   * refused request, no producer reset. Needs `onRejected`. Default: no limit.
   */
  maxRecordBytes?: number;
  /** Maps a sink error to a StreamscoreError. Default: classifyKafkaError. */
  classify?: (err: unknown) => StreamscoreError;
}

interface Group {
  records: OutboundRecord[];
  bytes: number;
  resolve: () => void;
  reject: (err: unknown) => void;
}

const MAX_BACKOFF_MS = 5000;
/** How many times a refused record may be replaced by something that is refused again. */
const MAX_REPLACEMENTS = 3;

export class SendAbandoned extends Error {
  constructor() {
    super('send abandoned at shutdown');
    this.name = 'SendAbandoned';
  }
}

/**
 * The only path to the producer. Groups are sent in the order they were enqueued, one request at
 * a time: kafkajs's idempotent producer is not safe with concurrent requests (tulios/kafkajs#598)
 * and one at a time keeps each partition's results in offset order. While a send is in flight,
 * everything enqueued meanwhile is coalesced into the next one, so throughput does not suffer.
 *
 * Failures: a retriable one (broker unreachable, leader moving) is retried with jittered backoff
 * until acknowledged, never skipped. When the broker refuses the records themselves
 * (KAFKA_RECORD_REJECTED), resending the same request would stall every partition behind it, so
 * the request is bisected, half after half in order, until the refused records are isolated; each
 * is handed to `onRejected`, whose replacements are sent in its place. A group resolves once its
 * records, or their replacements, are acknowledged.
 */
export class OrderedSender {
  private readonly queue: Group[] = [];
  private sending = false;
  private abandoned = false;

  constructor(private readonly options: SenderOptions) {}

  /** Groups waiting or in flight. */
  get pending(): number {
    return this.queue.length;
  }

  /** Resolves once the broker acknowledged every record of the group (or rejects if abandoned). */
  send(records: OutboundRecord[]): Promise<void> {
    if (this.abandoned) return Promise.reject(new SendAbandoned());
    return new Promise((resolve, reject) => {
      const bytes = records.reduce((n, r) => n + r.value.length + (r.key?.length ?? 0), 0);
      this.queue.push({ records, bytes, resolve, reject });
      void this.pump();
    });
  }

  /** Stops retrying: what is not acknowledged yet is rejected with SendAbandoned. */
  abandon(): void {
    this.abandoned = true;
    if (!this.sending) this.rejectAll();
  }

  private rejectAll(): void {
    for (const group of this.queue.splice(0)) group.reject(new SendAbandoned());
  }

  private takeNext(): Group[] {
    const taken: Group[] = [];
    let bytes = 0;
    let count = 0;
    for (const group of this.queue) {
      const fits =
        bytes + group.bytes <= this.options.maxSendBytes &&
        count + group.records.length <= this.options.maxSendRecords;
      if (taken.length > 0 && !fits) break;
      taken.push(group);
      bytes += group.bytes;
      count += group.records.length;
    }
    return taken;
  }

  private async pump(): Promise<void> {
    if (this.sending) return;
    this.sending = true;
    try {
      while (this.queue.length > 0 && !this.abandoned) {
        const groups = this.takeNext();
        const records = groups.flatMap((g) => g.records);
        if (!(await this.sendWithRetry(records))) break;
        this.queue.splice(0, groups.length);
        for (const group of groups) group.resolve();
      }
    } finally {
      this.sending = false;
      if (this.abandoned) this.rejectAll();
    }
  }

  /**
   * Retries until acknowledged (skipping would lose records), isolating records the broker
   * refuses for good; false once abandoned. `generation`: how many times these records replace
   * refused ones.
   */
  private async sendWithRetry(records: OutboundRecord[], generation = 0): Promise<boolean> {
    const classify = this.options.classify ?? classifyKafkaError;
    const { maxRecordBytes, onRejected } = this.options;
    if (
      maxRecordBytes !== undefined &&
      onRejected &&
      records.some((r) => sizeOf(r) > maxRecordBytes)
    ) {
      return this.withoutOversized(records, maxRecordBytes, generation);
    }
    for (let attempt = 1; ; attempt++) {
      try {
        if (records.length > 0) await this.options.sink.send(records);
        if (attempt > 1) this.options.onRecovered?.(attempt - 1);
        return true;
      } catch (err) {
        if (this.abandoned) return false;
        const error = classify(err);
        if (error.code === 'KAFKA_RECORD_REJECTED' && this.options.onRejected) {
          if (attempt > 1) this.options.onRecovered?.(attempt - 1);
          if (await this.prepareIsolation(error)) return this.isolate(records, error, generation);
          // The producer could not be reset: retry as any other failure.
        }
        const backoff = Math.min(MAX_BACKOFF_MS, 100 * 2 ** Math.min(attempt, 6));
        const wait = backoff / 2 + Math.random() * (backoff / 2);
        this.options.onRetry?.(err, attempt, wait, error);
        await new Promise<void>((resolve) => this.options.clock.setTimer(wait, resolve));
        if (this.abandoned) return false;
      }
    }
  }

  /** Sends the records in order, each one over `limit` replaced through onRejected unsent. */
  private async withoutOversized(
    records: OutboundRecord[],
    limit: number,
    generation: number,
  ): Promise<boolean> {
    let start = 0;
    for (let i = 0; i <= records.length; i++) {
      if (i < records.length && sizeOf(records[i]!) <= limit) continue;
      if (i > start && !(await this.sendWithRetry(records.slice(start, i), generation)))
        return false;
      start = i + 1;
      if (i === records.length) break;
      const error = new StreamscoreError(
        'KAFKA_RECORD_REJECTED',
        `record of ${sizeOf(records[i]!)} bytes is over the largest the broker takes (${limit} bytes)`,
        { details: { kafkaType: 'MESSAGE_TOO_LARGE' } },
      );
      if (!(await this.isolate([records[i]!], error, generation))) return false;
    }
    return true;
  }

  private async prepareIsolation(error: StreamscoreError): Promise<boolean> {
    try {
      await this.options.beforeIsolating?.(error);
      return true;
    } catch {
      return false;
    }
  }

  /** `records` were refused together: send them half after half, replacing what is refused alone. */
  private async isolate(
    records: OutboundRecord[],
    error: StreamscoreError,
    generation: number,
  ): Promise<boolean> {
    if (records.length > 1) {
      const middle = Math.ceil(records.length / 2);
      return (
        (await this.sendWithRetry(records.slice(0, middle), generation)) &&
        this.sendWithRetry(records.slice(middle), generation)
      );
    }
    if (generation >= MAX_REPLACEMENTS) {
      this.options.onDropped?.(records, error);
      return true;
    }
    const replacements = this.options.onRejected!(records, error);
    return this.sendWithRetry(replacements, generation + 1);
  }
}

/** Bytes a record takes on the wire, near enough: key, value, header names and values, overhead. */
/** A record's size on the wire, roughly: what the broker compares with max.message.bytes. */
export function sizeOf(record: OutboundRecord): number {
  let bytes = 70 + record.value.length + (record.key?.length ?? 0);
  for (const name in record.headers) {
    const value = record.headers[name]!;
    bytes +=
      name.length + (typeof value === 'string' ? Buffer.byteLength(value) : value.length) + 2;
  }
  return bytes;
}
