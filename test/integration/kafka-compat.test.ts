/**
 * Proves kafkajs 2.2.4 (last release, 2023) works against the Kafka version in kafka/pom.xml for
 * everything streamscore relies on: topic admin, the idempotent producer, manual commits in a
 * consumer group, heartbeats from inside a long batch, and transactions with sendOffsets.
 * Kafka 4 removed old protocol versions (KIP-896), so this is checked, not assumed.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { type Admin, type Consumer, type KafkaMessage, type Message } from 'kafkajs';
import { createTopics, readAll, testKafka, uniqueTopic } from './helpers/kafka.js';

const brokers = inject('kafkaBrokers');
const kafka = testKafka(brokers, 'streamscore-compat');

let admin: Admin;
beforeAll(async () => {
  admin = kafka.admin();
  await admin.connect();
});
afterAll(async () => {
  await admin.disconnect();
});

/** 1,000 records over 100 keys: 10 records per key, `seq` counts per key. */
function keyedMessages(count = 1000): Message[] {
  return Array.from({ length: count }, (_, i) => ({
    key: `user-${i % 100}`,
    value: JSON.stringify({ i }),
    headers: { seq: String(Math.floor(i / 100)), source: 'compat-test' },
  }));
}

async function highWatermarks(topic: string): Promise<Map<number, number>> {
  const offsets = await admin.fetchTopicOffsets(topic);
  return new Map(offsets.map(({ partition, high }) => [partition, Number(high)]));
}

async function committedOffsets(groupId: string, topic: string): Promise<Map<number, string>> {
  const [entry] = await admin.fetchOffsets({ groupId, topics: [topic] });
  return new Map((entry?.partitions ?? []).map(({ partition, offset }) => [partition, offset]));
}

async function waitFor(condition: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline)
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(50);
  }
}

/**
 * Transactional offsets become visible once the coordinator has written the commit markers, which
 * happens after EndTxn returns (tens of ms here). kafkajs fetches offsets with OffsetFetch v4,
 * which has no require_stable flag (KIP-447), so it reads the old offsets until then.
 */
async function expectCommittedEventually(
  groupId: string,
  topic: string,
  expected: Map<number, string>,
): Promise<void> {
  const deadline = Date.now() + 10_000;
  let actual = await committedOffsets(groupId, topic);
  while (Date.now() < deadline && JSON.stringify([...actual]) !== JSON.stringify([...expected])) {
    await sleep(25);
    actual = await committedOffsets(groupId, topic);
  }
  expect(actual).toEqual(expected);
}

const header = (message: KafkaMessage, name: string): string | undefined =>
  message.headers?.[name]?.toString();

describe('kafkajs 2.2.4 against the test broker', () => {
  it('creates a topic with 4 partitions, each led by the single broker', async () => {
    const topic = uniqueTopic('compat-admin');
    await createTopics(brokers, [{ topic, numPartitions: 4 }]);

    const { topics } = await admin.fetchTopicMetadata({ topics: [topic] });
    const partitions = topics[0]!.partitions.sort((a, b) => a.partitionId - b.partitionId);
    expect(partitions.map((p) => p.partitionId)).toEqual([0, 1, 2, 3]);
    const { brokers: nodes } = await admin.describeCluster();
    expect(nodes).toHaveLength(1);
    for (const p of partitions) {
      expect(p.leader).toBe(nodes[0]!.nodeId);
      expect(p.isr).toEqual([nodes[0]!.nodeId]);
    }
    expect([...(await highWatermarks(topic)).values()]).toEqual([0, 0, 0, 0]);
    // The broker does not auto-create topics, so typos in tests fail instead of creating one.
    expect(await admin.listTopics()).not.toContain(`${topic}-typo`);
  });

  it('idempotent producer with acks=-1 writes 1,000 keyed records with headers via sendBatch', async () => {
    const topic = uniqueTopic('compat-produce');
    await createTopics(brokers, [{ topic, numPartitions: 4 }]);
    const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
    await producer.connect();
    const all = keyedMessages();
    try {
      // Four calls, so the producer's sequence numbers must carry on across requests.
      for (let start = 0; start < all.length; start += 250) {
        const metadata = await producer.sendBatch({
          acks: -1,
          topicMessages: [{ topic, messages: all.slice(start, start + 250) }],
        });
        expect(metadata.length).toBeGreaterThan(0);
        for (const m of metadata) expect(m.errorCode).toBe(0);
      }
    } finally {
      await producer.disconnect();
    }

    const high = await highWatermarks(topic);
    expect([...high.values()].reduce((a, b) => a + b, 0)).toBe(1000);
    // 100 keys spread over the partitions; more than one partition must be used.
    expect([...high.values()].filter((n) => n > 0).length).toBeGreaterThan(1);

    const read = await readAll(brokers, topic, { expected: 1000, timeoutMs: 60_000 });
    expect(read).toHaveLength(1000);
    const byKey = new Map<string, { partitions: Set<number>; seqs: string[] }>();
    for (const message of read) {
      expect(header(message, 'source')).toBe('compat-test');
      const key = message.key!.toString();
      const entry = byKey.get(key) ?? { partitions: new Set(), seqs: [] };
      entry.partitions.add(message.partition);
      entry.seqs.push(header(message, 'seq')!);
      byKey.set(key, entry);
      const { i } = JSON.parse(message.value!.toString()) as { i: number };
      expect(key).toBe(`user-${i % 100}`);
    }
    expect(byKey.size).toBe(100);
    for (const { partitions, seqs } of byKey.values()) {
      // Same key, same partition, and in the order produced: the guarantee keyed records rely on.
      expect(partitions.size).toBe(1);
      expect(seqs).toEqual(['0', '1', '2', '3', '4', '5', '6', '7', '8', '9']);
    }
  });

  it('eachBatch with autoCommit off commits by hand, and the next member resumes there', async () => {
    const topic = uniqueTopic('compat-group');
    const groupId = uniqueTopic('compat-group');
    await createTopics(brokers, [{ topic, numPartitions: 4 }]);
    const producer = kafka.producer();
    await producer.connect();
    await producer.sendBatch({ acks: -1, topicMessages: [{ topic, messages: keyedMessages() }] });
    await producer.disconnect();

    const high = await highWatermarks(topic);
    // Commit only the first half of each partition, so the second member has something to prove.
    const cut = new Map([...high].map(([partition, n]) => [partition, Math.floor(n / 2)]));

    const first = kafka.consumer({ groupId, maxWaitTimeInMs: 100 });
    const seenByFirst: string[] = [];
    await first.connect();
    await first.subscribe({ topics: [topic], fromBeginning: true });
    const committedSoFar = new Map<number, number>();
    await first.run({
      autoCommit: false,
      eachBatch: async ({ batch, heartbeat }) => {
        for (const message of batch.messages)
          seenByFirst.push(`${batch.partition}:${message.offset}`);
        await heartbeat();
        const upTo = Math.min(Number(batch.lastOffset()) + 1, cut.get(batch.partition)!);
        if (upTo > (committedSoFar.get(batch.partition) ?? 0)) {
          await first.commitOffsets([{ topic, partition: batch.partition, offset: String(upTo) }]);
          committedSoFar.set(batch.partition, upTo);
        }
      },
    });
    try {
      await waitFor(
        () => seenByFirst.length >= 1000,
        60_000,
        'the first member to read all 1,000 records',
      );
    } finally {
      await first.disconnect();
    }
    expect(new Set(seenByFirst).size).toBe(1000);

    // autoCommit: false means nothing beyond our commits, also not on disconnect.
    const committed = await committedOffsets(groupId, topic);
    for (const [partition, offset] of cut) expect(committed.get(partition)).toBe(String(offset));

    const second = await startCollecting(groupId, topic);
    const remaining = 1000 - [...cut.values()].reduce((a, b) => a + b, 0);
    try {
      await waitFor(
        () => second.seen.length >= remaining,
        60_000,
        'the second member to read the rest',
      );
      await sleep(500); // a redelivered record would arrive with the rest; give it the chance
    } finally {
      await second.consumer.disconnect();
    }
    for (const [partition, n] of high) {
      const offsets = second.seen
        .filter((s) => s.partition === partition)
        .map((s) => Number(s.offset));
      const expected = Array.from(
        { length: n - cut.get(partition)! },
        (_, k) => cut.get(partition)! + k,
      );
      expect(offsets).toEqual(expected);
    }
  });

  it.each([
    { heartbeating: true, outcome: 'keeps its membership' },
    { heartbeating: false, outcome: 'is evicted, and its commit is refused' },
  ])(
    'a member whose batch outlasts the session timeout, heartbeating=$heartbeating, $outcome',
    async ({ heartbeating }) => {
      const topic = uniqueTopic('compat-heartbeat');
      const groupId = uniqueTopic('compat-heartbeat');
      await createTopics(brokers, [{ topic, numPartitions: 1 }]);
      const producer = kafka.producer();
      await producer.connect();
      await producer.send({
        topic,
        acks: -1,
        messages: [{ value: 'a' }, { value: 'b' }, { value: 'c' }],
      });
      await producer.disconnect();

      const consumer = kafka.consumer({
        groupId,
        sessionTimeout: 6_000, // the broker's minimum (group.min.session.timeout.ms)
        heartbeatInterval: 500,
        maxWaitTimeInMs: 100,
      });
      let joins = 0;
      let heartbeats = 0;
      consumer.on(consumer.events.GROUP_JOIN, () => joins++);
      // heartbeat() sends at most once per heartbeatInterval; the event counts the ones sent.
      consumer.on(consumer.events.HEARTBEAT, () => heartbeats++);
      let outcome: 'committed' | { refused: string } | undefined;
      await consumer.connect();
      await consumer.subscribe({ topics: [topic], fromBeginning: true });
      await consumer.run({
        autoCommit: false,
        eachBatch: async ({ batch, heartbeat }) => {
          if (outcome !== undefined) return;
          // Stand-in for slow inference: 8 s of work in small steps, longer than the session.
          for (let waited = 0; waited < 8_000; waited += 250) {
            await sleep(250);
            if (heartbeating) await heartbeat();
          }
          try {
            await consumer.commitOffsets([
              { topic, partition: batch.partition, offset: String(Number(batch.lastOffset()) + 1) },
            ]);
            outcome = 'committed';
          } catch (err) {
            outcome = { refused: err instanceof Error ? err.message : String(err) };
          }
        },
      });
      try {
        await waitFor(() => outcome !== undefined, 30_000, 'the long batch to finish');
      } finally {
        await consumer.disconnect();
      }

      if (heartbeating) {
        expect(outcome).toBe('committed');
        expect(joins).toBe(1);
        expect(heartbeats).toBeGreaterThanOrEqual(8); // about one per 500 ms over 8 s
        expect((await committedOffsets(groupId, topic)).get(0)).toBe('3');
      } else {
        expect(outcome).toEqual({
          refused: expect.stringMatching(/not aware of this member|generation|rebalanc/i),
        });
        expect((await committedOffsets(groupId, topic)).get(0)).toBe('-1');
      }
    },
  );

  it('transactions commit records and group offsets together; read_committed hides aborted ones', async () => {
    const input = uniqueTopic('compat-tx-in');
    const output = uniqueTopic('compat-tx-out');
    const groupId = uniqueTopic('compat-tx');
    await createTopics(brokers, [
      { topic: input, numPartitions: 2 },
      { topic: output, numPartitions: 1 },
    ]);
    const producer = kafka.producer({
      transactionalId: uniqueTopic('compat-tx'),
      idempotent: true,
      maxInFlightRequests: 1,
    });
    await producer.connect();
    const inTransaction = async (
      label: string,
      offsets: [p0: number, p1: number],
      end: 'commit' | 'abort',
      beforeEnd?: () => Promise<void>,
    ): Promise<void> => {
      const transaction = await producer.transaction();
      try {
        await transaction.send({
          topic: output,
          acks: -1,
          messages: Array.from({ length: 5 }, (_, i) => ({
            key: `${label}-${i}`,
            value: label,
            headers: { label },
          })),
        });
        await transaction.sendOffsets({
          consumerGroupId: groupId,
          topics: [
            {
              topic: input,
              partitions: [
                { partition: 0, offset: String(offsets[0]) },
                { partition: 1, offset: String(offsets[1]) },
              ],
            },
          ],
        });
        await beforeEnd?.();
      } catch (err) {
        await transaction.abort();
        throw err;
      }
      await (end === 'commit' ? transaction.commit() : transaction.abort());
    };

    const afterFirst = new Map([
      [0, '3'],
      [1, '2'],
    ]);
    try {
      await inTransaction('first', [3, 2], 'commit');
      await expectCommittedEventually(groupId, input, afterFirst);
      await inTransaction('aborted', [7, 6], 'abort');
      await inTransaction('second', [10, 9], 'commit', async () => {
        // The broker lets a new transaction add partitions only once the previous one is complete,
        // so the abort has settled here, and this transaction's own offsets are still pending:
        // neither may be visible.
        expect(await committedOffsets(groupId, input)).toEqual(afterFirst);
      });
      await expectCommittedEventually(
        groupId,
        input,
        new Map([
          [0, '10'],
          [1, '9'],
        ]),
      );
    } finally {
      await producer.disconnect();
    }

    // The aborted records sit between the two committed transactions in the log, so a reader that
    // failed to skip them would return them among its first ten.
    const committed = await readAll(brokers, output, {
      expected: 10,
      isolationLevel: 'read_committed',
    });
    expect(committed.map((m) => m.key!.toString())).toEqual([
      ...Array.from({ length: 5 }, (_, i) => `first-${i}`),
      ...Array.from({ length: 5 }, (_, i) => `second-${i}`),
    ]);
    expect(committed.map((m) => header(m, 'label'))).not.toContain('aborted');
    // Each transaction marker takes an offset: first 0-4, marker 5, aborted 6-10, marker 11.
    expect(committed.map((m) => Number(m.offset))).toEqual([0, 1, 2, 3, 4, 12, 13, 14, 15, 16]);

    // The aborted records were written; only the isolation level hides them.
    const everything = await readAll(brokers, output, {
      expected: 15,
      isolationLevel: 'read_uncommitted',
    });
    expect(everything.map((m) => m.value!.toString())).toEqual([
      ...Array<string>(5).fill('first'),
      ...Array<string>(5).fill('aborted'),
      ...Array<string>(5).fill('second'),
    ]);
  });
});

/** A member of `groupId` that records what it is given and commits nothing. */
async function startCollecting(
  groupId: string,
  topic: string,
): Promise<{ consumer: Consumer; seen: Array<{ partition: number; offset: string }> }> {
  const consumer = kafka.consumer({ groupId, maxWaitTimeInMs: 100 });
  const seen: Array<{ partition: number; offset: string }> = [];
  await consumer.connect();
  await consumer.subscribe({ topics: [topic], fromBeginning: true });
  await consumer.run({
    autoCommit: false,
    eachBatch: async ({ batch, heartbeat }) => {
      for (const message of batch.messages)
        seen.push({ partition: batch.partition, offset: message.offset });
      await heartbeat();
    },
  });
  return { consumer, seen };
}
