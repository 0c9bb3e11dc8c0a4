import { describe, expect, it } from 'vitest';
import { systemClock } from '../../src/batching/clock.js';
import type { OutboundRecord, RecordSink } from '../../src/kafka/types.js';
import { OrderedSender, SendAbandoned } from '../../src/worker/sender.js';

const record = (n: number, size = 10): OutboundRecord => ({
  topic: 't',
  key: null,
  value: Buffer.alloc(size, n),
  headers: { n: String(n) },
});

/** A sink that records each request, lets the test release them one by one, and can fail. */
class GatedSink implements RecordSink {
  requests: number[][] = [];
  inFlight = 0;
  maxInFlight = 0;
  failures = 0;
  private gates: (() => void)[] = [];

  async send(records: OutboundRecord[]): Promise<void> {
    this.inFlight++;
    this.maxInFlight = Math.max(this.maxInFlight, this.inFlight);
    try {
      await new Promise<void>((resolve) => this.gates.push(resolve));
      if (this.failures > 0) {
        this.failures--;
        throw new Error('not leader');
      }
      this.requests.push(records.map((r) => Number(r.headers.n)));
    } finally {
      this.inFlight--;
    }
  }

  async openGate(): Promise<void> {
    for (let i = 0; i < 100 && this.gates.length === 0; i++)
      await new Promise((r) => setTimeout(r, 2));
    this.gates.shift()?.();
    await new Promise((r) => setTimeout(r, 0));
  }

  async close(): Promise<void> {}
}

describe('OrderedSender', () => {
  it('sends one request at a time and coalesces what queued meanwhile, in order', async () => {
    const sink = new GatedSink();
    const sender = new OrderedSender({
      sink,
      clock: systemClock,
      maxSendBytes: 1e6,
      maxSendRecords: 1e6,
    });
    const acks: number[] = [];
    const sent = [0, 1, 2, 3].map((n) => sender.send([record(n)]).then(() => acks.push(n)));
    await sink.openGate(); // [0] alone: it was in flight when 1..3 arrived
    await sink.openGate(); // [1, 2, 3] together
    await Promise.all(sent);
    expect(sink.requests).toEqual([[0], [1, 2, 3]]);
    expect(sink.maxInFlight).toBe(1);
    expect(acks).toEqual([0, 1, 2, 3]);
  });

  it('respects the byte cap when coalescing but never splits a group', async () => {
    const sink = new GatedSink();
    const sender = new OrderedSender({
      sink,
      clock: systemClock,
      maxSendBytes: 25,
      maxSendRecords: 100,
    });
    const first = sender.send([record(0)]);
    const rest = [
      sender.send([record(1), record(2)]),
      sender.send([record(3)]),
      sender.send([record(4, 100)]),
    ];
    for (let i = 0; i < 4; i++) await sink.openGate();
    await Promise.all([first, ...rest]);
    expect(sink.requests).toEqual([[0], [1, 2], [3], [4]]);
  });

  it('retries a failed request with the same records until it is acknowledged', async () => {
    const sink = new GatedSink();
    sink.failures = 1;
    const retries: number[] = [];
    const sender = new OrderedSender({
      sink,
      clock: systemClock,
      maxSendBytes: 1e6,
      maxSendRecords: 1e6,
      onRetry: (_err, attempt) => retries.push(attempt),
    });
    const acked = sender.send([record(7), record(8)]);
    await sink.openGate(); // fails
    await sink.openGate(); // retried after backoff
    await acked;
    expect(retries).toEqual([1]);
    expect(sink.requests).toEqual([[7, 8]]);
  });

  it('abandon() rejects what is not acknowledged and refuses new sends', async () => {
    const sink = new GatedSink();
    sink.failures = 100;
    const sender = new OrderedSender({
      sink,
      clock: systemClock,
      maxSendBytes: 1e6,
      maxSendRecords: 1e6,
    });
    const stuck = sender.send([record(1)]);
    const queued = sender.send([record(2)]);
    await sink.openGate();
    sender.abandon();
    await expect(stuck).rejects.toBeInstanceOf(SendAbandoned);
    await expect(queued).rejects.toBeInstanceOf(SendAbandoned);
    await expect(sender.send([record(3)])).rejects.toBeInstanceOf(SendAbandoned);
  });
});
