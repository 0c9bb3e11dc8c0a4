/**
 * Whether this worker is ready to serve: what GET /readyz answers. Fed by the service (model
 * warmed, stopping) and by the Kafka source (partitions assigned, connection lost).
 *
 * Ready = the model is loaded and warmed AND the consumer has joined its group with at least one
 * partition AND it has not lost its connection since AND the service is not stopping.
 *
 * The model condition only ever goes from not ready to ready: once the first model is warm the
 * worker serves with it, and a later model swap keeps serving the old version until the new one
 * is warm, so it never makes the worker unready.
 */

export type KafkaState =
  /** Not joined yet (starting up). */
  | 'joining'
  /** Joined with at least one partition. */
  | 'assigned'
  /** Joined, but the group gave this member no partition (more workers than partitions). */
  | 'no-partitions'
  /** The consumer lost the broker (crashed, disconnected); kafkajs rejoins by itself. */
  | 'connection-lost';

export interface ReadinessState {
  ready: boolean;
  checks: {
    model: 'warming' | 'ready';
    kafka: KafkaState;
    /** Partitions assigned at the last join. */
    partitions: number;
    stopping: boolean;
  };
  /** One line per failing condition, for the 503 body and logs; empty when ready. */
  failing: string[];
}

export class Readiness {
  private modelReady = false;
  private kafka: KafkaState = 'joining';
  private partitions = 0;
  private isStopping = false;
  private lostReason: string | undefined;
  /** ready as last reported to listeners. */
  private last = false;
  private readonly listeners = new Set<(state: ReadinessState) => void>();

  /** The model is loaded and warmed up. Never undone: a model swap keeps the old one serving. */
  modelWarmed(): void {
    this.modelReady = true;
    this.changed();
  }

  /** The consumer (re)joined its group with these many partitions. */
  assigned(partitions: number): void {
    this.partitions = partitions;
    this.kafka = partitions > 0 ? 'assigned' : 'no-partitions';
    this.lostReason = undefined;
    this.changed();
  }

  /** The consumer lost its connection (kafkajs crashed or disconnected); ready again on rejoin. */
  connectionLost(reason?: string): void {
    this.kafka = 'connection-lost';
    this.lostReason = reason;
    this.changed();
  }

  /** The service is draining and leaving the group. */
  stopping(): void {
    this.isStopping = true;
    this.changed();
  }

  get ready(): boolean {
    return this.modelReady && this.kafka === 'assigned' && !this.isStopping;
  }

  state(): ReadinessState {
    const failing: string[] = [];
    if (!this.modelReady) failing.push('model: not loaded and warmed up yet');
    switch (this.kafka) {
      case 'joining':
        failing.push('kafka: consumer has not joined its group yet');
        break;
      case 'no-partitions':
        failing.push('kafka: consumer joined its group but has no partition assigned');
        break;
      case 'connection-lost':
        failing.push(
          `kafka: consumer lost its connection${this.lostReason ? ` (${this.lostReason})` : ''}; waiting for it to rejoin`,
        );
        break;
      case 'assigned':
        break;
    }
    if (this.isStopping) failing.push('stopping: draining in-flight requests');
    return {
      ready: failing.length === 0,
      checks: {
        model: this.modelReady ? 'ready' : 'warming',
        kafka: this.kafka,
        partitions: this.partitions,
        stopping: this.isStopping,
      },
      failing,
    };
  }

  /** Called with the new state whenever ready turns into not ready or back. */
  onChange(listener: (state: ReadinessState) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  private changed(): void {
    const now = this.ready;
    if (now === this.last) return;
    this.last = now;
    const state = this.state();
    for (const listener of this.listeners) listener(state);
  }
}
