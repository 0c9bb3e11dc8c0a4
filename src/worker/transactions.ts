import type { Clock } from '../batching/clock.js';
import type {
  InboundRecord,
  OutboundRecord,
  PartitionTransactions,
  RecordSource,
  TopicPartition,
  TransactionalSink,
} from '../kafka/types.js';
import type { Logger } from '../telemetry/logger.js';
import type { UnansweredRange } from './offsets.js';

export interface TransactionalDeliveryOptions<M> {
  source: RecordSource;
  sink: TransactionalSink;
  clock: Clock;
  /** How long answered records wait for their partition's next transaction (0: at once). */
  commitIntervalMs: number;
  /**
   * A partition's transaction commits early once this many answers wait: answers count as
   * unanswered (against backpressure) until committed, so at high rates waiting the whole
   * interval would stall fetching. Default 2048.
   */
  commitEarlyAt?: number;
  log: Logger;
  /** These records' outputs and offsets are committed: visible to read_committed readers. */
  onCommitted(items: readonly Delivered<M>[], partition: TopicPartition): void;
  /** A partition's transaction failed or the partition was lost: its uncommitted work is dropped. */
  onDropped?(partition: TopicPartition, records: readonly InboundRecord[], reason: string): void;
}

export interface Delivered<M> {
  record: InboundRecord;
  /** null: nothing to send for this record, only its offset to commit. */
  out: OutboundRecord | null;
  meta: M | undefined;
}

interface Slot<M> {
  record: InboundRecord;
  done: boolean;
  out: OutboundRecord | null;
  meta: M | undefined;
}

const MAX_BACKOFF_MS = 5000;
/** Reads of the committed offset after an uncertain commit, 250 ms apart and doubling (~4 s). */
const UNCERTAIN_READS = 5;

/** One input partition: its transactional producer and its records in offset order. */
class Lane<M> {
  state: 'opening' | 'open' | 'closed' = 'opening';
  txns: PartitionTransactions | null = null;
  /** Records read, in offset order; slots before `head` moved to `ready`. */
  slots: Slot<M>[] = [];
  head = 0;
  /** Every tracked record not committed yet, by offset (the record object is the identity). */
  live = new Map<string, Slot<M>>();
  /** Answered records, contiguous from the committed offset: the next transaction's content. */
  ready: Slot<M>[] = [];
  committing: Promise<void> | null = null;
  cancelTimer: (() => void) | null = null;
  /** First offset this worker read from the partition: where to go back to if nothing was committed. */
  firstRead: string | null = null;
  /** The offset after the last one tracked: anything below it was read already. */
  next: bigint | null = null;
  failures = 0;
  /**
   * The offset of a commit asked for whose answer was lost (KAFKA_COMMIT_UNCERTAIN): the broker
   * may have committed it, so the partition's offset is read until it shows it, or for a while.
   */
  uncertain: bigint | null = null;

  constructor(readonly tp: TopicPartition) {}

  forget(): InboundRecord[] {
    const dropped = [...this.live.values()].map((slot) => slot.record);
    this.slots = [];
    this.head = 0;
    this.live.clear();
    this.next = null;
    this.ready = [];
    this.cancelTimer?.();
    this.cancelTimer = null;
    return dropped;
  }
}

const keyOf = (tp: TopicPartition): string => `${tp.topic}\u0000${tp.partition}`;

/**
 * exactly-once delivery. Each input partition owns a transactional producer (see
 * TransactionalSink); a partition's answers (results and dead letters alike) enter its
 * transaction strictly in offset order, and the transaction commits them together with the
 * offset after the last of them. So a committed offset always has exactly the answers of the
 * records before it, and a crash anywhere leaves either both or neither.
 *
 * A partition is not read until its producer is open (fencing the former owner) and the
 * committed offset is known. If a transaction fails for any reason, the partition's uncommitted
 * work is dropped, its producer reopened (fencing, which aborts what was left open) and reading
 * resumes from the committed offset: the same records are answered again, in a new transaction.
 */
export class TransactionalDelivery<M = unknown> {
  private readonly lanes = new Map<string, Lane<M>>();
  /**
   * Per partition, the offset of this worker's last acknowledged commit. A commit the broker
   * acknowledged cannot be undone, so the group's offset read back after fencing is never
   * legitimately below it; kept across revocations, as a later owner can only move it forward.
   */
  private readonly committedHere = new Map<string, bigint>();
  private closed = false;

  constructor(private readonly options: TransactionalDeliveryOptions<M>) {}

  /** Records read and not committed yet. */
  get pending(): number {
    let count = 0;
    for (const lane of this.lanes.values()) count += lane.live.size;
    return count;
  }

  /** Per partition: the first uncommitted offset and how many records are not committed. */
  uncommitted(): UnansweredRange[] {
    const out: UnansweredRange[] = [];
    for (const lane of this.lanes.values()) {
      const first = lane.live.values().next();
      if (first.done) continue;
      out.push({ ...lane.tp, from: first.value.record.offset, count: lane.live.size });
    }
    return out;
  }

  /**
   * The full assignment after a rebalance. Call synchronously from the source's onAssignment:
   * new partitions are held before any fetch, lost ones are dropped without committing.
   */
  assign(partitions: readonly TopicPartition[]): void {
    const assigned = new Set(partitions.map(keyOf));
    for (const [key, lane] of this.lanes) {
      if (!assigned.has(key)) this.drop(lane, 'partition revoked');
    }
    const added = partitions.filter((tp) => !this.lanes.has(keyOf(tp)));
    if (added.length === 0 || this.closed) return;
    this.options.source.hold(added);
    for (const tp of added) {
      const lane = new Lane<M>({ topic: tp.topic, partition: tp.partition });
      this.lanes.set(keyOf(tp), lane);
      void this.open(lane, null);
    }
  }

  /**
   * A record was read: its answer must be committed before any later record's. False when it
   * must not be answered: its partition is not open (it will be read again once it is), or the
   * offset was tracked already (the consumer read it again after rejoining the group).
   */
  track(record: InboundRecord): boolean {
    const lane = this.lanes.get(keyOf(record));
    if (!lane || lane.state !== 'open') return false;
    const offset = BigInt(record.offset);
    if (lane.next !== null && offset < lane.next) return false;
    const slot: Slot<M> = { record, done: false, out: null, meta: undefined };
    lane.slots.push(slot);
    lane.live.set(record.offset, slot);
    lane.firstRead ??= record.offset;
    lane.next = offset + 1n;
    return true;
  }

  /** Answers for tracked records, in any order; each joins its partition's next transaction. */
  deliver(items: readonly Delivered<M>[]): void {
    const touched = new Set<Lane<M>>();
    for (const { record, out, meta } of items) {
      const lane = this.lanes.get(keyOf(record));
      const slot = lane?.live.get(record.offset);
      // The partition was lost or reset since this record was read: its answer is dropped.
      if (!lane || !slot || slot.record !== record || slot.done) continue;
      slot.done = true;
      slot.out = out;
      slot.meta = meta;
      touched.add(lane);
    }
    for (const lane of touched) {
      while (lane.head < lane.slots.length && lane.slots[lane.head]!.done) {
        lane.ready.push(lane.slots[lane.head]!);
        lane.head++;
      }
      if (lane.head > 1024 && lane.head * 2 > lane.slots.length) {
        lane.slots = lane.slots.slice(lane.head);
        lane.head = 0;
      }
      if (lane.ready.length > 0) this.schedule(lane);
    }
  }

  /** Commits everything answered so far, in every partition (drain). */
  async flush(): Promise<void> {
    for (;;) {
      const waiting = [...this.lanes.values()].filter(
        (lane) => lane.state === 'open' && (lane.ready.length > 0 || lane.committing),
      );
      if (waiting.length === 0) return;
      await Promise.all(
        waiting.map((lane) => {
          lane.cancelTimer?.();
          lane.cancelTimer = null;
          return lane.committing ?? this.commit(lane);
        }),
      );
    }
  }

  /** Drops every partition (what is not committed stays uncommitted) and closes the producers. */
  async close(): Promise<void> {
    this.closed = true;
    const closing = [...this.lanes.values()].map((lane) => this.drop(lane, 'worker stopping'));
    await Promise.all(closing);
    await this.options.sink.close();
  }

  private schedule(lane: Lane<M>): void {
    if (lane.committing || lane.state !== 'open') return;
    if (
      this.options.commitIntervalMs === 0 ||
      lane.ready.length >= (this.options.commitEarlyAt ?? 2048)
    ) {
      lane.cancelTimer?.();
      lane.cancelTimer = null;
      void this.commit(lane);
      return;
    }
    if (lane.cancelTimer) return;
    lane.cancelTimer = this.options.clock.setTimer(this.options.commitIntervalMs, () => {
      lane.cancelTimer = null;
      void this.commit(lane);
    });
  }

  private commit(lane: Lane<M>): Promise<void> {
    if (lane.committing) return lane.committing;
    const txns = lane.txns;
    if (lane.state !== 'open' || !txns || lane.ready.length === 0) return Promise.resolve();
    const batch = lane.ready.splice(0);
    const next = (BigInt(batch[batch.length - 1]!.record.offset) + 1n).toString();
    lane.committing = (async () => {
      try {
        await txns.commit(
          batch.flatMap((slot) => (slot.out ? [slot.out] : [])),
          next,
        );
      } catch (err) {
        lane.committing = null;
        if ((err as { code?: unknown }).code === 'KAFKA_COMMIT_UNCERTAIN') {
          lane.uncertain = BigInt(next);
        }
        if (lane.txns === txns) void this.reset(lane, err);
        return;
      }
      lane.committing = null;
      lane.failures = 0;
      this.committedHere.set(keyOf(lane.tp), BigInt(next));
      for (const slot of batch) lane.live.delete(slot.record.offset);
      this.options.onCommitted(
        batch.map((slot) => ({ record: slot.record, out: slot.out, meta: slot.meta })),
        lane.tp,
      );
      if (lane.ready.length > 0) this.schedule(lane);
    })();
    return lane.committing;
  }

  /**
   * A transaction failed: nothing of this partition after the committed offset can be trusted
   * to be committed (or not), so start over from the committed offset with a fresh producer.
   */
  private async reset(lane: Lane<M>, err: unknown): Promise<void> {
    if (lane.state === 'closed') return;
    const { tp } = lane;
    lane.state = 'opening';
    this.options.source.hold([tp]);
    const firstRead = lane.firstRead;
    const dropped = lane.forget();
    lane.failures++;
    this.options.log.warn(
      { err, ...tp, dropped: dropped.length, attempt: lane.failures },
      'transaction failed; reading the partition again from its committed offset',
    );
    this.options.onDropped?.(tp, dropped, 'transaction failed');
    const txns = lane.txns;
    lane.txns = null;
    await txns?.close();
    await this.backoff(lane.failures);
    await this.open(lane, firstRead);
  }

  /** Opens the partition's producer (retrying while the broker is away), then lets it be read. */
  private async open(lane: Lane<M>, rewindTo: string | null): Promise<void> {
    for (let attempt = 1; lane.state === 'opening'; attempt++) {
      let txns: PartitionTransactions;
      try {
        txns = await this.options.sink.open(lane.tp);
      } catch (err) {
        this.options.log.warn(
          { err, ...lane.tp, attempt },
          'cannot open the partition for transactions yet; retrying',
        );
        await this.backoff(attempt);
        continue;
      }
      let committedOffset = txns.committedOffset;
      if (lane.uncertain !== null && lane.state === 'opening') {
        try {
          committedOffset = await this.settleUncertain(lane, txns, lane.uncertain);
        } catch (err) {
          this.options.log.warn(
            { err, ...lane.tp, attempt },
            'cannot read the committed offset again yet; retrying',
          );
          await txns.close();
          await this.backoff(attempt);
          continue;
        }
        lane.uncertain = null;
      }
      if (lane.state !== 'opening') {
        await txns.close();
        return;
      }
      lane.txns = txns;
      lane.state = 'open';
      const from = this.resumeFrom(lane.tp, committedOffset, rewindTo);
      // Records below the offset reading resumes from are not this lane's to answer.
      if (from !== null) lane.next = BigInt(from);
      this.options.source.release(lane.tp, from);
      this.options.log.info(
        { ...lane.tp, committedOffset, from },
        'partition open for transactions',
      );
    }
  }

  /**
   * After a commit whose answer was lost: the committed offset once it shows that commit, or as
   * it is after UNCERTAIN_READS reads (the commit was aborted). Fencing returns once the broker
   * has completed such a commit, yet after a broker restart the group's offset appears to have
   * come back without it once (a CI run answered two partitions' first transactions twice), and
   * reading it too early answers the whole transaction again.
   */
  private async settleUncertain(
    lane: Lane<M>,
    txns: PartitionTransactions,
    uncertain: bigint,
  ): Promise<string | null> {
    let committed = txns.committedOffset;
    const landed = (offset: string | null): boolean =>
      offset !== null && BigInt(offset) >= uncertain;
    for (let read = 1; !landed(committed) && read < UNCERTAIN_READS; read++) {
      if (lane.state !== 'opening') return committed;
      await new Promise<void>((resolve) =>
        this.options.clock.setTimer(250 * 2 ** (read - 1), () => resolve()),
      );
      committed = await txns.readCommittedOffset();
    }
    this.options.log.info(
      { ...lane.tp, uncertainOffset: uncertain.toString(), committedOffset: committed },
      landed(committed)
        ? 'the commit whose answer was lost did land; resuming after it'
        : 'the commit whose answer was lost did not land; resuming from the committed offset',
    );
    return committed;
  }

  /**
   * Where reading resumes: the group's committed offset; if none, the first record this worker
   * read (nothing of it committed yet). Never below this worker's own last commit: a read-back
   * behind it is stale (kafkajs's OffsetFetch cannot ask for stable offsets), and trusting it
   * would answer committed records a second time.
   */
  private resumeFrom(
    tp: TopicPartition,
    committedOffset: string | null,
    rewindTo: string | null,
  ): string | null {
    const own = this.committedHere.get(keyOf(tp));
    if (own === undefined || (committedOffset !== null && BigInt(committedOffset) >= own)) {
      return committedOffset ?? rewindTo;
    }
    this.options.log.warn(
      { ...tp, committedOffset, committedByThisWorker: own.toString() },
      "the group's committed offset read back is behind this worker's own last commit; resuming after its own commit",
    );
    return own.toString();
  }

  private async drop(lane: Lane<M>, reason: string): Promise<void> {
    const wasOpening = lane.state === 'opening';
    lane.state = 'closed';
    this.lanes.delete(keyOf(lane.tp));
    const dropped = lane.forget();
    if (dropped.length > 0) this.options.onDropped?.(lane.tp, dropped, reason);
    // A partition held for opening that is no longer ours must not stay paused if it comes back.
    if (wasOpening) this.options.source.release(lane.tp, null);
    const txns = lane.txns;
    lane.txns = null;
    await lane.committing;
    await txns?.close();
  }

  private backoff(attempt: number): Promise<void> {
    const cap = Math.min(MAX_BACKOFF_MS, 100 * 2 ** Math.min(attempt, 6));
    const wait = cap / 2 + Math.random() * (cap / 2);
    return new Promise((resolve) => this.options.clock.setTimer(wait, resolve));
  }
}
