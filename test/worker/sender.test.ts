import { createRequire } from 'node:module';
import { KafkaJSConnectionError } from 'kafkajs';
import { describe, expect, it } from 'vitest';
import { systemClock, type Clock } from '../../src/batching/clock.js';
import type { StreamscoreError } from '../../src/errors.js';
import type { OutboundRecord, RecordSink } from '../../src/kafka/types.js';
import { OrderedSender, SendAbandoned } from '../../src/worker/sender.js';

// The errors kafkajs's producer throws: protocol errors are built from the broker's error code.
const { createErrorFromCode } = createRequire(import.meta.url)('kafkajs/src/protocol/error.js') as {
  createErrorFromCode: (code: number) => Error;
};
const MESSAGE_TOO_LARGE = 10;
const tooLarge = () => createErrorFromCode(MESSAGE_TOO_LARGE);

/** Timers fire at once: backoff without waiting. */
const instantClock: Clock = {
  now: () => Date.now(),
  setTimer: (_ms, fn) => {
    const t = setTimeout(fn, 0);
    return () => clearTimeout(t);
  },
};

/**
 * Acknowledges at once, like a broker whose max.message.bytes refuses any record bigger than
 * `limit`: a request holding one is refused whole (kafkajs fails the sendBatch). `down` sends
 * fail with a connection error first.
 */
class RefusingSink implements RecordSink {
  requests: string[][] = [];
  acked: string[] = [];
  down = 0;
  constructor(private readonly limit: number) {}

  async send(records: OutboundRecord[]): Promise<void> {
    this.requests.push(records.map(name));
    if (this.down > 0) {
      this.down--;
      throw new KafkaJSConnectionError('Connection error: connect ECONNREFUSED 127.0.0.1:9092');
    }
    if (records.some((r) => r.value.length > this.limit)) throw tooLarge();
    this.acked.push(...records.map(name));
  }

  async close(): Promise<void> {}
}

const name = (r: OutboundRecord) => String(r.headers.n);
const sized = (n: string, size: number): OutboundRecord => ({
  topic: 't',
  key: null,
  value: Buffer.alloc(size, 1),
  headers: { n },
});

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

  it('isolates records the broker refuses for good, sends their replacements in place, and keeps order', async () => {
    const sink = new RefusingSink(100);
    const rejected: { names: string[]; code: string }[] = [];
    const sender = new OrderedSender({
      sink,
      clock: instantClock,
      maxSendBytes: 1e6,
      maxSendRecords: 1e6,
      onRejected: (records, error) => {
        rejected.push({ names: records.map(name), code: error.code });
        return records.map((r) => sized(`${name(r)}-dl`, 10));
      },
    });
    const groups = [
      ['a', 'b', 'BIG1', 'c'],
      ['d', 'e', 'f', 'g', 'BIG2', 'h'],
    ].map((names) => sender.send(names.map((n) => sized(n, n.startsWith('BIG') ? 1000 : 10))));
    await Promise.all(groups);
    expect(sink.acked).toEqual(['a', 'b', 'BIG1-dl', 'c', 'd', 'e', 'f', 'g', 'BIG2-dl', 'h']);
    expect(rejected).toEqual([
      { names: ['BIG1'], code: 'KAFKA_RECORD_REJECTED' },
      { names: ['BIG2'], code: 'KAFKA_RECORD_REJECTED' },
    ]);
    // Bisection, not a resend of the whole request: BIG1 alone was refused exactly once.
    expect(sink.requests.filter((r) => r.length === 1 && r[0] === 'BIG1')).toHaveLength(1);
  });

  it('gives up on a replacement that is refused again and again, reporting it, and moves on', async () => {
    const sink = new RefusingSink(100);
    const dropped: string[] = [];
    const sender = new OrderedSender({
      sink,
      clock: instantClock,
      maxSendBytes: 1e6,
      maxSendRecords: 1e6,
      onRejected: (records) => records.map((r) => sized(`${name(r)}'`, 1000)), // still too big
      onDropped: (records) => dropped.push(...records.map(name)),
    });
    await sender.send([sized('x', 10), sized('BIG', 1000), sized('y', 10)]);
    expect(sink.acked).toEqual(['x', 'y']);
    expect(dropped).toEqual(["BIG'''"]);
    await sender.send([sized('z', 10)]); // the queue is not stalled
    expect(sink.acked).toEqual(['x', 'y', 'z']);
  });

  it('an empty replacement drops the refused record; the group still resolves', async () => {
    const sink = new RefusingSink(100);
    const sender = new OrderedSender({
      sink,
      clock: instantClock,
      maxSendBytes: 1e6,
      maxSendRecords: 1e6,
      onRejected: () => [],
    });
    await sender.send([sized('BIG', 1000)]);
    expect(sink.acked).toEqual([]);
  });

  it('retries an unreachable broker without isolating anything, then reports recovery once', async () => {
    const sink = new RefusingSink(100);
    sink.down = 3;
    const retries: string[] = [];
    const recovered: number[] = [];
    const sender = new OrderedSender({
      sink,
      clock: instantClock,
      maxSendBytes: 1e6,
      maxSendRecords: 1e6,
      onRetry: (_err, _attempt, _wait, error: StreamscoreError) => retries.push(error.code),
      onRecovered: (failed) => recovered.push(failed),
      onRejected: () => {
        throw new Error('nothing is refused here');
      },
    });
    await sender.send([sized('a', 10), sized('b', 10)]);
    await sender.send([sized('c', 10)]);
    expect(retries).toEqual(['KAFKA_UNAVAILABLE', 'KAFKA_UNAVAILABLE', 'KAFKA_UNAVAILABLE']);
    expect(sink.requests).toEqual([['a', 'b'], ['a', 'b'], ['a', 'b'], ['a', 'b'], ['c']]);
    expect(recovered).toEqual([3]); // once, after the send that followed the failures
  });

  it('without onRejected a refused request is retried as before (never skipped silently)', async () => {
    const sink = new RefusingSink(100);
    let retries = 0;
    const sender = new OrderedSender({
      sink,
      clock: instantClock,
      maxSendBytes: 1e6,
      maxSendRecords: 1e6,
      onRetry: () => {
        if (++retries === 3) sender.abandon();
      },
    });
    await expect(sender.send([sized('BIG', 1000)])).rejects.toBeInstanceOf(SendAbandoned);
    expect(sink.acked).toEqual([]);
  });

  it('resets the producer before each bisection of a refused request', async () => {
    const sink = new RefusingSink(100);
    const events: string[] = [];
    const send = sink.send.bind(sink);
    sink.send = async (records) => {
      events.push(`send ${records.map(name).join(',')}`);
      return send(records);
    };
    const sender = new OrderedSender({
      sink,
      clock: instantClock,
      maxSendBytes: 1e6,
      maxSendRecords: 1e6,
      beforeIsolating: async (error) => {
        events.push(`reset (${error.code})`);
      },
      onRejected: () => [],
    });
    await sender.send([sized('a', 10), sized('BIG', 1000), sized('b', 10)]);
    expect(events).toEqual([
      'send a,BIG,b',
      'reset (KAFKA_RECORD_REJECTED)',
      'send a,BIG',
      'reset (KAFKA_RECORD_REJECTED)',
      'send a',
      'send BIG',
      'reset (KAFKA_RECORD_REJECTED)',
      'send b',
    ]);
    expect(sink.acked).toEqual(['a', 'b']);
  });

  it('refuses records over maxRecordBytes without sending them, replacing them in place', async () => {
    const sink = new RefusingSink(100);
    const rejected: string[] = [];
    const sender = new OrderedSender({
      sink,
      clock: instantClock,
      maxSendBytes: 1e6,
      maxSendRecords: 1e6,
      maxRecordBytes: 500,
      beforeIsolating: () => Promise.reject(new Error('no refused request expected')),
      onRejected: (records, error) => {
        rejected.push(`${records.map(name).join()} ${error.code}`);
        return [sized(`${name(records[0]!)}-dl`, 10)];
      },
    });
    await sender.send([sized('a', 10), sized('b', 10), sized('BIG', 1000), sized('c', 10)]);
    expect(sink.requests).toEqual([['a', 'b'], ['BIG-dl'], ['c']]);
    expect(sink.acked).toEqual(['a', 'b', 'BIG-dl', 'c']);
    expect(rejected).toEqual(['BIG KAFKA_RECORD_REJECTED']);
  });
});
