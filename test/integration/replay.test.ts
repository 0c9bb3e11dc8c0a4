/**
 * `streamscore replay` against the real broker: 1,000 requests on a 4-partition topic (some of
 * them corrupt), a range of it scored again into a fresh result topic. Exactly the requests in
 * range come back, once each (results by correlation id, dead letters by key), none outside it;
 * ranges by offset and by time; the summary and the exit status say so.
 */
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { runReplay, type ReplayFlags, type ReplaySummary } from '../../src/cli/replay.js';
import { AvroCodec } from '../../src/codec/avro.js';
import { loadDigitsDataset } from '../../src/model/digits-data.js';
import { silentLogger } from '../../src/telemetry/logger.js';
import { HEADER } from '../../src/worker/headers.js';
import { tempDir, writeDigitsVersion } from '../model/helpers.js';
import { freshTopics, readAll, testKafka } from './helpers/kafka.js';

const brokers = inject('kafkaBrokers');
const codec = new AvroCodec();
const TOTAL = 1000;
const PARTITIONS = 4;
/** Request i goes to partition i % 4 at offset floor(i / 4); every 23rd one is corrupt. */
const isCorrupt = (i: number) => i % 23 === 5;
const partitionOf = (i: number) => i % PARTITIONS;
const offsetOf = (i: number) => Math.floor(i / PARTITIONS);
/** Record timestamps: one second apart in request order, ending ten minutes ago. */
const BASE_TIME = Date.now() - 10 * 60_000 - TOTAL * 1000;
const timeOf = (i: number) => BASE_TIME + i * 1000;

describe('streamscore replay', () => {
  const { heldOut } = loadDigitsDataset();
  const cleanups: (() => Promise<void>)[] = [];
  let repository: string;
  let requests: string;

  beforeAll(async () => {
    const repo = await tempDir('replay');
    cleanups.push(repo.remove);
    await writeDigitsVersion(repo.dir, '1');
    await writeDigitsVersion(repo.dir, '2');
    repository = repo.dir;
    ({ requests } = await freshTopics(brokers, 'replay', ['requests'], PARTITIONS));
    const producer = testKafka(brokers).producer();
    await producer.connect();
    for (let start = 0; start < TOTAL; start += 250) {
      await producer.send({
        topic: requests,
        messages: Array.from({ length: 250 }, (_, j) => {
          const i = start + j;
          const id = `r-${i}`;
          const value = codec.encodeRequest({
            id,
            model: null,
            modelVersion: null,
            requestedAt: null,
            inputs: [{ name: 'pixels', shape: [64], data: heldOut[i % heldOut.length]!.pixels }],
          });
          return {
            key: id,
            value: isCorrupt(i) ? value.subarray(0, 30) : value,
            partition: partitionOf(i),
            timestamp: String(timeOf(i)),
          };
        }),
      });
    }
    await producer.disconnect();
  });

  afterAll(async () => {
    for (const cleanup of cleanups) await cleanup();
  });

  /** Fresh result and dead-letter topics, and a configuration file naming that dead-letter topic. */
  async function freshRun(name: string) {
    const { into, dlq } = await freshTopics(brokers, `replay-${name}`, ['into', 'dlq'], PARTITIONS);
    const config = path.join(repository, `${name}.json`);
    await writeFile(
      config,
      JSON.stringify({
        kafka: { brokers },
        topics: { requests: [requests], deadLetter: dlq },
        model: { repository, name: 'digits', version: '1', replicas: 0, backend: 'wasm' },
        batching: { maxBatchSize: 32, maxDelayMs: 5, autotune: false },
        log: { level: 'silent' },
      }),
    );
    return { into, dlq, config };
  }

  /** Runs the command in-process as `streamscore replay ... --json` and reads back its output. */
  async function replay(flags: Omit<ReplayFlags, 'topic' | 'json'>) {
    let stdout = '';
    const stderr: string[] = [];
    const code = await runReplay(
      { topic: requests, json: true, ...flags },
      {
        stdout: (text) => (stdout += text),
        stderr: (text) => stderr.push(text),
        isTTY: false,
        env: {},
        log: silentLogger,
      },
    );
    return { code, summary: JSON.parse(stdout) as ReplaySummary, stderr };
  }

  /**
   * What the replay wrote: results by correlation id, dead letters by key. The command returns
   * once the broker acknowledged every answer, so the topics' end offsets are final by then.
   */
  async function readBack({ into, dlq }: { into: string; dlq: string }) {
    const out = await readAll(brokers, into, { expected: await written(into), timeoutMs: 60_000 });
    const letters = await readAll(brokers, dlq, {
      expected: await written(dlq),
      timeoutMs: 60_000,
    });
    return { out, letters };
  }

  async function written(topic: string): Promise<number> {
    const admin = testKafka(brokers).admin();
    await admin.connect();
    try {
      const offsets = await admin.fetchTopicOffsets(topic);
      return offsets.reduce((sum, p) => sum + Number(p.high), 0);
    } finally {
      await admin.disconnect();
    }
  }

  function expectExactly(
    { out, letters }: Awaited<ReturnType<typeof readBack>>,
    inRange: number[],
    version: string,
  ) {
    const ids = out.map((m) => String(m.headers?.[HEADER.correlationId]));
    const wanted = inRange.filter((i) => !isCorrupt(i)).map((i) => `r-${i}`);
    expect(ids.length).toBe(wanted.length); // once each, nothing outside the range
    expect(new Set(ids)).toEqual(new Set(wanted));
    let correct = 0;
    for (const message of out) {
      const result = codec.decodeResult(message.value!);
      const i = Number(result.id.slice(2));
      expect(message.key?.toString()).toBe(result.id);
      expect(result.modelVersion).toBe(version);
      if (result.label === String(heldOut[i % heldOut.length]!.label)) correct++;
    }
    expect(correct / out.length).toBeGreaterThan(0.9);
    const corrupt = inRange.filter(isCorrupt).map((i) => `r-${i}`);
    expect(letters.map((m) => m.key!.toString()).sort()).toEqual(corrupt.sort());
    for (const letter of letters) {
      const i = Number(letter.key!.toString().slice(2));
      expect(letter.headers?.[HEADER.errorCode]?.toString()).toBe('DECODE_FAILED');
      // Where it came from: the request's own partition and offset, not the replay's.
      expect(letter.headers?.[HEADER.sourcePartition]?.toString()).toBe(String(partitionOf(i)));
      expect(letter.headers?.[HEADER.sourceOffset]?.toString()).toBe(String(offsetOf(i)));
    }
  }

  it('replays offsets 50..199 of every partition: exactly one answer per request in range', async () => {
    const run = await freshRun('offsets');
    const { code, summary, stderr } = await replay({
      from: { kind: 'offset', offset: 50n },
      to: { kind: 'offset', offset: 200n },
      into: run.into,
      config: run.config,
    });

    const inRange = Array.from({ length: TOTAL }, (_, i) => i).filter(
      (i) => offsetOf(i) >= 50 && offsetOf(i) < 200,
    );
    expect(inRange.length).toBe(600);
    const corrupt = inRange.filter(isCorrupt).length;
    expectExactly(await readBack(run), inRange, '1');

    expect(code).toBe(0);
    expect(summary.ok).toBe(true);
    expect(summary.toExclusive).toBe(true);
    expect(summary.partitions.map((p) => [p.partition, p.from, p.to, p.read, p.complete])).toEqual(
      [0, 1, 2, 3].map((p) => [p, '50', '200', 150, true]),
    );
    const sums = summary.partitions.reduce(
      (s, p) => ({
        answered: s.answered + p.answered,
        deadLettered: s.deadLettered + p.deadLettered,
        unanswered: s.unanswered + p.unanswered,
      }),
      { answered: 0, deadLettered: 0, unanswered: 0 },
    );
    expect(sums).toEqual({ answered: 600 - corrupt, deadLettered: corrupt, unanswered: 0 });
    // Not a TTY: plain progress lines, the last one at the end.
    expect(stderr.at(-1)).toBe(
      `replay: 600/600 read, ${600 - corrupt} answered, ${corrupt} dead-lettered\n`,
    );
  });

  it('replays a time range [from, to) of two partitions with another model version', async () => {
    const run = await freshRun('times');
    // Records written from request 300's time on (ISO), up to request 700's (epoch ms, excluded).
    const { code, summary } = await replay({
      from: { kind: 'time', ms: Date.parse(new Date(timeOf(300)).toISOString()) },
      to: { kind: 'time', ms: timeOf(700) },
      into: run.into,
      config: run.config,
      partitions: [1, 3],
      modelVersion: '2',
    });

    const inRange = Array.from({ length: TOTAL }, (_, i) => i).filter(
      (i) => i >= 300 && i < 700 && (partitionOf(i) === 1 || partitionOf(i) === 3),
    );
    expect(inRange.length).toBe(200);
    const corrupt = inRange.filter(isCorrupt).length;
    expectExactly(await readBack(run), inRange, '2');

    expect(code).toBe(0);
    expect(summary.model).toEqual({ name: 'digits', version: '2' });
    expect(summary.partitions.map((p) => [p.partition, p.from, p.to, p.read])).toEqual([
      [1, '75', '175', 100],
      [3, '75', '175', 100],
    ]);
    const answered = summary.partitions.reduce((n, p) => n + p.answered, 0);
    const deadLettered = summary.partitions.reduce((n, p) => n + p.deadLettered, 0);
    expect([answered, deadLettered]).toEqual([200 - corrupt, corrupt]);
  });
});
