import { describe, expect, it } from 'vitest';
import type { InboundRecord, TopicPartition } from '../../src/kafka/types.js';
import { TransactionalDelivery, type Delivered } from '../../src/worker/transactions.js';
import { FakeSource, FakeTransactions } from '../helpers/fakes.js';
import { ManualClock } from '../helpers/manual-clock.js';

const tp = (partition: number): TopicPartition => ({ topic: 'requests', partition });

function record(partition: number, offset: number): InboundRecord {
  return {
    topic: 'requests',
    partition,
    offset: String(offset),
    key: null,
    value: Buffer.from(`req ${partition}/${offset}`),
    headers: {},
    timestamp: 0,
  };
}

const answer = (r: InboundRecord): Delivered<string> => ({
  record: r,
  out: { topic: 'results', key: null, value: Buffer.from(`answer ${r.offset}`), headers: {} },
  meta: `meta ${r.offset}`,
});

/** Lets the delivery's promise chains (open, commit) settle. */
const settle = async (): Promise<void> => {
  for (let i = 0; i < 20; i++) await Promise.resolve();
};

function setup(commitIntervalMs = 0, commitEarlyAt?: number) {
  const source = new FakeSource();
  const sink = new FakeTransactions();
  const clock = new ManualClock();
  const committed: string[] = [];
  const dropped: { partition: number; records: number; reason: string }[] = [];
  const warnings: string[] = [];
  const delivery = new TransactionalDelivery<string>({
    source,
    sink,
    clock,
    commitIntervalMs,
    ...(commitEarlyAt === undefined ? {} : { commitEarlyAt }),
    log: { warn: (_: unknown, msg: string) => warnings.push(msg), info() {} } as never,
    onCommitted: (items) => committed.push(...items.map((i) => i.meta!)),
    onDropped: (partition, records, reason) =>
      dropped.push({ partition: partition.partition, records: records.length, reason }),
  });
  return { source, sink, clock, delivery, committed, dropped, warnings };
}

describe('TransactionalDelivery', () => {
  it('holds a new partition until its producer is open, then reads from the committed offset', async () => {
    const { source, sink, delivery } = setup();
    sink.committed.set(0, '40');
    delivery.assign([tp(0), tp(1)]);
    // Held at once, before any fetch could return records of the new assignment.
    expect(source.held).toEqual(new Set(['requests/0', 'requests/1']));
    await settle();
    expect(sink.opens).toEqual([0, 1]);
    expect(source.held.size).toBe(0);
    expect(source.seeks).toEqual([{ topic: 'requests', partition: 0, offset: '40' }]);
    expect(source.events).toContain('release requests/1@default');
  });

  it('ignores records read before the partition is open (they are read again)', async () => {
    const { sink, delivery } = setup();
    sink.failNextOpen = 1;
    delivery.assign([tp(0)]);
    await settle();
    const early = record(0, 0);
    delivery.track(early);
    delivery.deliver([answer(early)]);
    await settle();
    expect(delivery.pending).toBe(0);
    expect(sink.commits).toEqual([]);
  });

  it('commits answers with the offset after them, strictly in offset order', async () => {
    const { sink, delivery, committed } = setup();
    delivery.assign([tp(0)]);
    await settle();
    const records = [0, 1, 2, 3].map((o) => record(0, o));
    records.forEach((r) => delivery.track(r));
    // 2 and 3 are answered first (e.g. an early dead letter, a faster batch): they must wait for 0 and 1.
    delivery.deliver([answer(records[2]!), answer(records[3]!)]);
    await settle();
    expect(sink.commits).toEqual([]);
    delivery.deliver([answer(records[0]!)]);
    await settle();
    delivery.deliver([answer(records[1]!)]);
    await settle();
    expect(sink.commits.map((c) => [c.values, c.offset])).toEqual([
      [['answer 0'], '1'],
      [['answer 1', 'answer 2', 'answer 3'], '4'],
    ]);
    expect(committed).toEqual(['meta 0', 'meta 1', 'meta 2', 'meta 3']);
    expect(delivery.pending).toBe(0);
  });

  it('gathers answers for commit.intervalMs into one transaction', async () => {
    const { sink, delivery, clock } = setup(100);
    delivery.assign([tp(0)]);
    await settle();
    const records = [0, 1, 2].map((o) => record(0, o));
    records.forEach((r) => delivery.track(r));
    for (const r of records) delivery.deliver([answer(r)]);
    await settle();
    expect(sink.commits).toEqual([]);
    clock.advance(100);
    await settle();
    expect(sink.commits.map((c) => c.offset)).toEqual(['3']);
  });

  it('commits before the interval once enough answers wait', async () => {
    const { sink, clock, delivery } = setup(60_000, 3);
    delivery.assign([tp(0)]);
    await settle();
    const records = [0, 1, 2, 3].map((o) => record(0, o));
    records.forEach((r) => delivery.track(r));
    delivery.deliver(records.slice(0, 2).map(answer));
    await settle();
    expect(sink.commits).toEqual([]);
    delivery.deliver([answer(records[2]!)]);
    await settle();
    expect(sink.commits.map((c) => c.offset)).toEqual(['3']);
    expect(clock.pendingTimers).toBe(0);
  });

  it('after a failed transaction, drops the uncommitted answers and reads again from the committed offset with a new producer', async () => {
    const { source, sink, delivery, clock, dropped } = setup();
    delivery.assign([tp(0)]);
    await settle();
    const first = [0, 1].map((o) => record(0, o));
    first.forEach((r) => delivery.track(r));
    delivery.deliver(first.map(answer));
    await settle();
    expect(sink.committed.get(0)).toBe('2');

    const second = [2, 3, 4].map((o) => record(0, o));
    second.forEach((r) => delivery.track(r));
    sink.failNextCommit = 1;
    delivery.deliver([answer(second[0]!)]);
    await settle();
    expect(source.held).toEqual(new Set(['requests/0']));
    expect(dropped).toEqual([{ partition: 0, records: 3, reason: 'transaction failed' }]);
    clock.advance(10_000); // the backoff before reopening
    await settle();
    expect(sink.opens).toEqual([0, 0]);
    expect(source.seeks.at(-1)).toEqual({ topic: 'requests', partition: 0, offset: '2' });

    // A late answer for a record read before the reset belongs to nothing any more.
    delivery.deliver([answer(second[1]!)]);
    // The same offsets, read again, are answered in a transaction of the new producer.
    const again = [2, 3, 4].map((o) => record(0, o));
    again.forEach((r) => delivery.track(r));
    delivery.deliver(again.map(answer));
    await settle();
    const last = sink.commits.at(-1)!;
    expect(last.values).toEqual(['answer 2', 'answer 3', 'answer 4']);
    expect(last.offset).toBe('5');
    expect(last.producer).toBe(2);
    expect(sink.commits.flatMap((c) => c.values)).toEqual([
      'answer 0',
      'answer 1',
      'answer 2',
      'answer 3',
      'answer 4',
    ]);
  });

  it('goes back to the first record it read when nothing was committed before a failure', async () => {
    const { source, sink, delivery, clock } = setup();
    delivery.assign([tp(0)]);
    await settle();
    const records = [7, 8].map((o) => record(0, o));
    records.forEach((r) => delivery.track(r));
    sink.failNextCommit = 1;
    delivery.deliver(records.map(answer));
    await settle();
    clock.advance(10_000);
    await settle();
    expect(source.seeks.at(-1)).toEqual({ topic: 'requests', partition: 0, offset: '7' });
  });

  it('after a failed transaction, never resumes below its own last commit when the committed offset reads back stale', async () => {
    const { source, sink, clock, delivery, warnings } = setup();
    delivery.assign([tp(0)]);
    await settle();
    const first = [0, 1, 2].map((o) => record(0, o));
    first.forEach((r) => delivery.track(r));
    delivery.deliver(first.map(answer));
    await settle();
    expect(sink.committed.get(0)).toBe('3');

    const second = record(0, 3);
    delivery.track(second);
    sink.failNextCommit = 1;
    // Right after a broker restart the group's offset can read back as none at all.
    sink.staleReads.set(0, [null]);
    delivery.deliver([answer(second)]);
    await settle();
    clock.advance(10_000);
    await settle();
    // Not the first record read (0): that would answer 0..2 a second time.
    expect(source.seeks.at(-1)).toEqual({ topic: 'requests', partition: 0, offset: '3' });
    expect(delivery.track(record(0, 1))).toBe(false);
    expect(warnings.some((w) => w.includes('behind this worker'))).toBe(true);

    const again = record(0, 3);
    expect(delivery.track(again)).toBe(true);
    delivery.deliver([answer(again)]);
    await settle();
    expect(sink.commits.flatMap((c) => c.values)).toEqual([
      'answer 0',
      'answer 1',
      'answer 2',
      'answer 3',
    ]);
  });

  it('resumes after its own commit when a partition it gets back reads back an older offset', async () => {
    const { source, sink, delivery } = setup();
    delivery.assign([tp(0)]);
    await settle();
    const records = [0, 1, 2, 3].map((o) => record(0, o));
    records.forEach((r) => delivery.track(r));
    delivery.deliver(records.map(answer));
    await settle();
    expect(sink.committed.get(0)).toBe('4');

    delivery.assign([]); // lost in a rebalance, e.g. while the consumer restarted itself
    sink.staleReads.set(0, ['2']);
    delivery.assign([tp(0)]);
    await settle();
    expect(source.seeks.at(-1)).toEqual({ topic: 'requests', partition: 0, offset: '4' });

    // A later owner's commits only move it forward: those are trusted.
    delivery.assign([]);
    sink.committed.set(0, '9');
    delivery.assign([tp(0)]);
    await settle();
    expect(source.seeks.at(-1)).toEqual({ topic: 'requests', partition: 0, offset: '9' });
  });

  it('after a commit whose answer was lost, reads the offset again until that commit shows, and answers nothing twice', async () => {
    const { source, sink, delivery, clock } = setup();
    delivery.assign([tp(0)]);
    await settle();
    const records = [0, 1, 2].map((o) => record(0, o));
    records.forEach((r) => delivery.track(r));
    // The broker takes the commit; its answer is lost (the broker stopped), and the first reads
    // after reopening show the group's offset from before it.
    sink.unansweredCommit = 'landed';
    sink.staleReads.set(0, [null, null]);
    delivery.deliver(records.map(answer));
    await settle();
    expect(sink.committed.get(0)).toBe('3');
    expect(source.held).toEqual(new Set(['requests/0']));
    clock.advance(10_000); // the backoff before reopening
    await settle();
    expect(source.held).toEqual(new Set(['requests/0'])); // still reading the offset again
    for (let i = 0; i < 4 && source.held.size > 0; i++) {
      clock.advance(2_000);
      await settle();
    }
    expect(sink.rereads).toBe(2);
    expect(source.held.size).toBe(0);
    expect(source.seeks.at(-1)).toEqual({ topic: 'requests', partition: 0, offset: '3' });
    expect(delivery.track(record(0, 0))).toBe(false);
    expect(sink.commits.flatMap((c) => c.values)).toEqual(['answer 0', 'answer 1', 'answer 2']);
  });

  it('after a commit whose answer was lost and that did not land, resumes from the committed offset after a few reads', async () => {
    const { source, sink, delivery, clock } = setup();
    sink.committed.set(0, '5');
    delivery.assign([tp(0)]);
    await settle();
    const records = [5, 6].map((o) => record(0, o));
    records.forEach((r) => delivery.track(r));
    sink.unansweredCommit = 'lost';
    delivery.deliver(records.map(answer));
    await settle();
    for (let i = 0; i < 10 && source.held.size > 0; i++) {
      clock.advance(5_000);
      await settle();
    }
    expect(sink.rereads).toBe(4);
    expect(source.seeks.at(-1)).toEqual({ topic: 'requests', partition: 0, offset: '5' });
    // The same records, read again, are answered in a new transaction.
    const again = [5, 6].map((o) => record(0, o));
    again.forEach((r) => expect(delivery.track(r)).toBe(true));
    delivery.deliver(again.map(answer));
    await settle();
    expect(sink.commits.flatMap((c) => c.values)).toEqual(['answer 5', 'answer 6']);
    expect(sink.committed.get(0)).toBe('7');
  });

  it('does not track a record again that it read already, nor one below where reading resumed', async () => {
    const { sink, delivery } = setup();
    sink.committed.set(0, '10');
    delivery.assign([tp(0)]);
    await settle();
    expect(delivery.track(record(0, 9))).toBe(false); // below the committed offset
    expect(delivery.track(record(0, 10))).toBe(true);
    expect(delivery.track(record(0, 11))).toBe(true);
    expect(delivery.track(record(0, 10))).toBe(false); // the consumer read it again
    expect(delivery.pending).toBe(2);
  });

  it('never commits for a partition after losing it', async () => {
    const { sink, delivery, dropped } = setup();
    delivery.assign([tp(0), tp(1)]);
    await settle();
    const r0 = record(0, 0);
    const r1 = record(1, 0);
    delivery.track(r0);
    delivery.track(r1);
    delivery.assign([tp(1)]); // partition 0 went to another worker
    delivery.deliver([answer(r0), answer(r1)]);
    await settle();
    expect(sink.commits.map((c) => c.partition)).toEqual([1]);
    expect(dropped).toEqual([{ partition: 0, records: 1, reason: 'partition revoked' }]);
  });

  it('flush commits every answered record at once', async () => {
    const { sink, delivery } = setup(60_000);
    delivery.assign([tp(0), tp(1)]);
    await settle();
    const records = [record(0, 0), record(1, 5)];
    records.forEach((r) => delivery.track(r));
    delivery.deliver(records.map(answer));
    await delivery.flush();
    expect(sink.commits.map((c) => [c.partition, c.offset]).sort()).toEqual([
      [0, '1'],
      [1, '6'],
    ]);
  });
});
