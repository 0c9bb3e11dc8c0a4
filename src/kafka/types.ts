/** The Kafka edge. The worker core talks to these interfaces only, never to kafkajs. */

export interface TopicPartition {
  topic: string;
  partition: number;
}

export interface TopicPartitionOffset extends TopicPartition {
  /** Kafka offsets are 64-bit; kept as decimal strings as kafkajs does. */
  offset: string;
}

export type RecordHeaders = Record<string, Buffer | undefined>;

export interface InboundRecord extends TopicPartition {
  offset: string;
  key: Buffer | null;
  value: Buffer | null;
  headers: RecordHeaders;
  /** Broker or producer timestamp, epoch milliseconds. */
  timestamp: number;
  /**
   * The worker's tracing state for this record while it is in flight (telemetry/tracing.ts: its
   * row in the in-flight trace columns); the Kafka edge leaves it undefined. Kept on the record,
   * not in a WeakMap keyed by it: the map's lookups and its weak-table work in every garbage
   * collection cost about 1 µs a request (measured), a tenth of what a small model spends on one.
   */
  trace?: unknown;
}

export interface OutboundRecord {
  topic: string;
  key: Buffer | null;
  value: Buffer;
  headers: Record<string, string | Buffer>;
  /** The inbound record this answers (result or dead letter); never sent. */
  origin?: InboundRecord;
}

export interface BatchControl {
  /** Keeps the group membership alive during long work (kafkajs only heartbeats from its loop). */
  heartbeat(): Promise<void>;
  /** True once the partition this batch came from was revoked or the source is stopping. */
  isStale(): boolean;
}

export interface SourceHandlers {
  /** One fetched batch of one partition, in offset order. Resolving lets the next fetch proceed. */
  onRecords(records: InboundRecord[], control: BatchControl): Promise<void>;
  /** The full current assignment, after every rebalance. */
  onAssignment?(partitions: TopicPartition[]): void;
  /** The source gave up (a non-retriable client error): the process should exit and restart. */
  onFatal?(error: Error): void;
  /**
   * The consumer lost the cluster (it crashed, e.g. the broker went away, or disconnected). A
   * consumer that restarts by itself calls onAssignment again once it has rejoined.
   */
  onConnectionLost?(reason: string): void;
  /** After each fetch with records: how far the partition's last record read is behind its end. */
  onLag?(partition: TopicPartition, lag: number): void;
}

/** Listeners besides the consumer of the records (readiness, metrics); see RecordSource.watch. */
export type SourceListeners = Pick<SourceHandlers, 'onAssignment' | 'onConnectionLost' | 'onLag'>;

/** Records of a partition between the last one fetched and the high watermark. */
export interface TopicPartitionLag extends TopicPartition {
  lag: number;
}

export interface RecordSource {
  /** Joins the group and starts delivering; resolves once running. */
  run(handlers: SourceHandlers): Promise<void>;
  /**
   * Adds listeners to group and connection events besides the handlers given to run() (which
   * belong to the worker); call it before run(). Returns a function that removes them.
   */
  watch?(listeners: SourceListeners): () => void;
  /** Stops fetching from every assigned partition while staying in the group (backpressure, drain). */
  pause(): void;
  /** Fetches again after pause(). */
  resume(): void;
  /**
   * Stops fetching from these partitions until released, independently of pause()/resume()
   * (exactly-once: nothing is read from a partition before its earlier owner is fenced).
   * Call it from onAssignment to be sure no record of the new assignment was fetched yet.
   */
  hold(partitions: TopicPartition[]): void;
  /** Fetches the partition again, from `offset` when given (the next offset to read). */
  release(partition: TopicPartition, offset: string | null): void;
  /** Commits the given next-offsets-to-read for the group. */
  commit(offsets: TopicPartitionOffset[]): Promise<void>;
  /** Stops fetching and leaves the group. Safe to call more than once. */
  stop(): Promise<void>;
}

export interface RecordSink {
  /**
   * Resolves only once the broker acknowledged every record (acks=all). A record's Buffers are
   * read until then and not after: once a send resolves, the worker may write a Buffer it gave
   * (a result's `traceparent`) over for a later record.
   */
  send(records: OutboundRecord[]): Promise<void>;
  /**
   * Replaces the producer with a new one (a new producer id and sequence numbers), after the
   * broker refused part of a request and the old producer's sequence state cannot be trusted.
   */
  reset?(): Promise<void>;
  close(): Promise<void>;
}

/**
 * exactly-once: one transactional producer per input partition, the pre-KIP-447 pattern. Opening
 * a partition fences every earlier producer of its transactional id (the broker aborts, or
 * finishes, what that producer left open), so a worker that lost the partition can no longer
 * commit for it; only then is the committed offset read, which is therefore final.
 */
export interface TransactionalSink {
  open(partition: TopicPartition): Promise<PartitionTransactions>;
  close(): Promise<void>;
}

export interface PartitionTransactions {
  /** The group's committed offset of the partition, read after fencing; null when none. */
  readonly committedOffset: string | null;
  /**
   * Produces the records and commits `offset` (the next offset to read) for the partition in
   * one Kafka transaction. Rejects if anything failed; the transaction is then aborted (by this
   * call, or by the broker when the partition is opened again), except when the error's code is
   * `KAFKA_COMMIT_UNCERTAIN`: the commit was asked for and its answer lost, so the broker may
   * have committed it after all.
   */
  commit(records: OutboundRecord[], offset: string): Promise<void>;
  /** Reads the group's committed offset of the partition again; null when none. */
  readCommittedOffset(): Promise<string | null>;
  close(): Promise<void>;
}
