import type { TopicPartition, TopicPartitionOffset } from '../kafka/types.js';

interface PartitionState {
  /** Offsets in the order they were read (which is offset order within a partition). */
  queue: bigint[];
  head: number;
  acked: Set<bigint>;
  /** First offset ever tracked: nothing below it is ours to commit. */
  first: bigint;
  /** Next offset to read after everything tracked so far. */
  end: bigint;
  /** What was last committed (or null), so unchanged partitions are not committed again. */
  committed: bigint | null;
}

/** What a partition still owes: read from `from` on, `count` records without an answer. */
export interface UnansweredRange extends TopicPartition {
  from: string;
  count: number;
}

const keyOf = (tp: TopicPartition) => `${tp.topic}\u0000${tp.partition}`;

/**
 * At-least-once bookkeeping: a partition's committable offset is its first offset that has no
 * acknowledged result or dead letter yet, so a commit never skips over an unanswered record.
 */
export class OffsetTracker {
  private readonly partitions = new Map<string, PartitionState & TopicPartition>();

  /**
   * Records a read record as in flight. False when the offset was tracked already: the consumer
   * read it again (e.g. it rejoined the group and restarted from the committed offset) while
   * the first copy is still being answered, so this copy must be skipped, not answered twice.
   */
  track(tp: TopicPartition, offset: string): boolean {
    const key = keyOf(tp);
    let state = this.partitions.get(key);
    const value = BigInt(offset);
    if (state && value < state.end) return false;
    if (!state) {
      state = {
        ...tp,
        queue: [],
        head: 0,
        acked: new Set(),
        first: value,
        end: value,
        committed: null,
      };
      this.partitions.set(key, state);
    }
    state.queue.push(value);
    state.end = value + 1n;
    return true;
  }

  /** The record's result or dead letter was acknowledged by the broker. */
  ack(tp: TopicPartition, offset: string): void {
    const state = this.partitions.get(keyOf(tp));
    if (!state) return; // partition revoked meanwhile: its new owner decides
    state.acked.add(BigInt(offset));
    while (state.head < state.queue.length && state.acked.delete(state.queue[state.head]!)) {
      state.head++;
    }
    // Compact now and then so the queue does not grow without bound.
    if (state.head > 1024 && state.head * 2 > state.queue.length) {
      state.queue = state.queue.slice(state.head);
      state.head = 0;
    }
  }

  /** Records tracked but not yet acknowledged, across partitions. */
  get pending(): number {
    let count = 0;
    for (const state of this.partitions.values()) count += state.queue.length - state.head;
    return count;
  }

  /** Per partition: the first unanswered offset and how many records are unanswered. */
  unanswered(): UnansweredRange[] {
    const out: UnansweredRange[] = [];
    for (const state of this.partitions.values()) {
      // Acknowledged out of order (e.g. a dead letter sent early) is answered, not unanswered.
      const count = state.queue.length - state.head - state.acked.size;
      if (count === 0) continue;
      const from = state.queue[state.head]!.toString();
      out.push({ topic: state.topic, partition: state.partition, from, count });
    }
    return out;
  }

  /** Offsets to commit now: only partitions whose committable offset moved. */
  committable(): TopicPartitionOffset[] {
    const out: TopicPartitionOffset[] = [];
    for (const state of this.partitions.values()) {
      const next = state.head < state.queue.length ? state.queue[state.head]! : state.end;
      if (next <= (state.committed ?? state.first)) continue;
      out.push({ topic: state.topic, partition: state.partition, offset: next.toString() });
    }
    return out;
  }

  markCommitted(offsets: TopicPartitionOffset[]): void {
    for (const offset of offsets) {
      const state = this.partitions.get(keyOf(offset));
      if (state) state.committed = BigInt(offset.offset);
    }
  }

  /** Forgets partitions that are no longer assigned; their late acks are ignored. */
  retain(assigned: TopicPartition[]): void {
    const keep = new Set(assigned.map(keyOf));
    for (const key of this.partitions.keys()) if (!keep.has(key)) this.partitions.delete(key);
  }
}
