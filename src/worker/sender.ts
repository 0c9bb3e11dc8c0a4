import type { Clock } from '../batching/clock.js';
import type { OutboundRecord, RecordSink } from '../kafka/types.js';

export interface SenderOptions {
  sink: RecordSink;
  clock: Clock;
  /** Largest combined send; one group larger than this is still sent alone. */
  maxSendBytes: number;
  maxSendRecords: number;
  /** A send failed; it will be retried after `retryInMs`. */
  onRetry?: (err: unknown, attempt: number, retryInMs: number) => void;
}

interface Group {
  records: OutboundRecord[];
  bytes: number;
  resolve: () => void;
  reject: (err: unknown) => void;
}

const MAX_BACKOFF_MS = 5000;

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

  /** Retries until acknowledged (skipping would lose records); false once abandoned. */
  private async sendWithRetry(records: OutboundRecord[]): Promise<boolean> {
    for (let attempt = 1; ; attempt++) {
      try {
        if (records.length > 0) await this.options.sink.send(records);
        return true;
      } catch (err) {
        if (this.abandoned) return false;
        const backoff = Math.min(MAX_BACKOFF_MS, 100 * 2 ** Math.min(attempt, 6));
        const wait = backoff / 2 + Math.random() * (backoff / 2);
        this.options.onRetry?.(err, attempt, wait);
        await new Promise<void>((resolve) => this.options.clock.setTimer(wait, resolve));
        if (this.abandoned) return false;
      }
    }
  }
}
