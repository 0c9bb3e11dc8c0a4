import { StreamscoreError } from '../../src/errors.js';
import type {
  BatchControl,
  InboundRecord,
  OutboundRecord,
  PartitionTransactions,
  RecordSink,
  RecordSource,
  SourceHandlers,
  TopicPartition,
  TopicPartitionOffset,
  TransactionalSink,
} from '../../src/kafka/types.js';
import type { BatchOutputs, ModelInfo, ModelRunner, PackedBatch } from '../../src/model/types.js';

/** Delivers whatever the test pushes; records commits and the order of calls. */
export class FakeSource implements RecordSource {
  handlers: SourceHandlers | null = null;
  commits: TopicPartitionOffset[][] = [];
  events: string[] = [];
  paused = false;
  heartbeats = 0;

  async run(handlers: SourceHandlers): Promise<void> {
    this.handlers = handlers;
  }

  deliver(records: InboundRecord[]): Promise<void> {
    const control: BatchControl = {
      heartbeat: async () => {
        this.heartbeats++;
      },
      isStale: () => false,
    };
    return this.handlers!.onRecords(records, control);
  }

  pause(): void {
    this.paused = true;
    this.events.push('pause');
  }

  resume(): void {
    this.paused = false;
    this.events.push('resume');
  }

  /** Partitions held (not fetched) and the seeks their release asked for. */
  held = new Set<string>();
  seeks: TopicPartitionOffset[] = [];

  hold(partitions: TopicPartition[]): void {
    for (const tp of partitions) this.held.add(`${tp.topic}/${tp.partition}`);
    this.events.push(`hold ${partitions.map((tp) => `${tp.topic}/${tp.partition}`).join(',')}`);
  }

  release(tp: TopicPartition, offset: string | null): void {
    this.held.delete(`${tp.topic}/${tp.partition}`);
    if (offset !== null) this.seeks.push({ ...tp, offset });
    this.events.push(`release ${tp.topic}/${tp.partition}@${offset ?? 'default'}`);
  }

  /** Simulates a rebalance: the handlers learn the new assignment. */
  assign(partitions: TopicPartition[]): void {
    this.handlers!.onAssignment?.(partitions);
  }

  async commit(offsets: TopicPartitionOffset[]): Promise<void> {
    this.commits.push(offsets);
    this.events.push('commit');
  }

  async stop(): Promise<void> {
    this.events.push('stop');
  }

  /** The last committed offset of a partition, or undefined. */
  committed(topic: string, partition: number): string | undefined {
    let last: string | undefined;
    for (const batch of this.commits)
      for (const o of batch) if (o.topic === topic && o.partition === partition) last = o.offset;
    return last;
  }
}

/** The record with its own copy of each Buffer header value. */
function copyOf(record: OutboundRecord): OutboundRecord {
  const headers: OutboundRecord['headers'] = {};
  for (const [name, value] of Object.entries(record.headers)) {
    headers[name] = Buffer.isBuffer(value) ? Buffer.from(value) : value;
  }
  return { ...record, headers };
}

/** Acknowledges sends, or fails the next N, or holds them until released. */
export class FakeSink implements RecordSink {
  sent: OutboundRecord[] = [];
  failNext = 0;
  attempts = 0;
  private held: (() => void)[] = [];
  holding = false;
  private inFlight = 0;
  maxConcurrentSends = 0;

  async send(records: OutboundRecord[]): Promise<void> {
    this.inFlight++;
    this.maxConcurrentSends = Math.max(this.maxConcurrentSends, this.inFlight);
    try {
      await this.sendOnce(records);
    } finally {
      this.inFlight--;
    }
  }

  private async sendOnce(records: OutboundRecord[]): Promise<void> {
    this.attempts++;
    if (this.failNext > 0) {
      this.failNext--;
      throw new Error('broker not available');
    }
    if (this.holding) await new Promise<void>((resolve) => this.held.push(resolve));
    // What a broker keeps is the bytes as they were sent: a sender may reuse a Buffer it gave
    // once the send is acknowledged (RecordSink).
    this.sent.push(...records.map(copyOf));
  }

  release(): void {
    this.holding = false;
    const held = this.held;
    this.held = [];
    held.forEach((resolve) => resolve());
  }

  async close(): Promise<void> {}

  to(topic: string): OutboundRecord[] {
    return this.sent.filter((r) => r.topic === topic);
  }
}

/** y = 2x over a [4] input, labels by argmax; throws for any example whose first value is 666. */
export class FakeModel implements ModelRunner {
  readonly info: ModelInfo = {
    name: 'doubler',
    version: '7',
    inputs: [{ name: 'x', dtype: 'float32', shape: [4] }],
    outputs: [{ name: 'y', dtype: 'float32', shape: [4] }],
    labels: ['a', 'b', 'c', 'd'],
    backend: 'fake',
  };
  batchSizes: number[] = [];

  async predict(batch: PackedBatch): Promise<BatchOutputs> {
    this.batchSizes.push(batch.size);
    const x = batch.inputs.x!;
    for (let i = 0; i < x.length; i += 4) if (x[i] === 666) throw new Error('model exploded');
    return { y: x.map((v) => v * 2) };
  }

  async dispose(): Promise<void> {}
}

export interface FakeCommit {
  partition: number;
  producer: number;
  values: string[];
  offset: string;
}

/** Transactions that succeed unless told to fail; every open is a new producer (epoch). */
export class FakeTransactions implements TransactionalSink {
  commits: FakeCommit[] = [];
  opens: number[] = [];
  committed = new Map<number, string>();
  failNextCommit = 0;
  failNextOpen = 0;
  /**
   * What the next reads of a partition's committed offset (at open, then again) give instead of
   * the offset committed: stale reads, one value per read.
   */
  staleReads = new Map<number, (string | null)[]>();
  /** The next commit fails without an answer: it is committed (`'landed'`) or not (`'lost'`). */
  unansweredCommit: 'landed' | 'lost' | null = null;
  /** Reads of a committed offset after the open (readCommittedOffset). */
  rereads = 0;
  private producers = 0;

  private readCommitted(partition: number): string | null {
    const stale = this.staleReads.get(partition);
    if (stale && stale.length > 0) return stale.shift()!;
    return this.committed.get(partition) ?? null;
  }

  async open(tp: TopicPartition): Promise<PartitionTransactions> {
    if (this.failNextOpen > 0) {
      this.failNextOpen--;
      throw new Error('broker not available');
    }
    const producer = ++this.producers;
    this.opens.push(tp.partition);
    return {
      committedOffset: this.readCommitted(tp.partition),
      readCommittedOffset: async () => {
        this.rereads++;
        return this.readCommitted(tp.partition);
      },
      commit: async (records: OutboundRecord[], offset: string) => {
        await Promise.resolve();
        if (this.failNextCommit > 0) {
          this.failNextCommit--;
          throw new Error('transaction aborted');
        }
        const unanswered = this.unansweredCommit;
        this.unansweredCommit = null;
        if (unanswered !== 'lost') {
          this.commits.push({
            partition: tp.partition,
            producer,
            values: records.map((r) => r.value.toString()),
            offset,
          });
          this.committed.set(tp.partition, offset);
        }
        if (unanswered !== null) {
          throw new StreamscoreError('KAFKA_COMMIT_UNCERTAIN', 'no answer to the commit', {
            retriable: true,
          });
        }
      },
      close: async () => {},
    };
  }

  async close(): Promise<void> {}
}
