import { describe, expect, it } from 'vitest';
import {
  GROUP_ID_WORDS,
  ID,
  InFlightTraces,
  readRequestSpan,
  SpanRecordWriter,
  type RequestSpanRecord,
  type SpanRecords,
} from '../../src/telemetry/span-records.js';
import {
  idWords,
  SPAN_ID_WORDS,
  TRACE_ID_WORDS,
  wordsToHex,
} from '../../src/telemetry/trace-ids.js';
import { requestSpanRecord } from '../helpers/span-records.js';

const record = (i: number, overrides: Partial<RequestSpanRecord> = {}): RequestSpanRecord =>
  requestSpanRecord(i, {
    topic: `topic-${i}`,
    partition: i % 3,
    offset: 2 ** 40 + i,
    traceState: i % 2 ? 'k=v' : '',
    queueWaitMs: i,
    ...overrides,
  });

const readAll = (records: SpanRecords): RequestSpanRecord[] =>
  Array.from({ length: records.count }, (_, i) => readRequestSpan(records, i));

/** Opens a slot as the worker does for a request read, with these ids. */
function openSlot(traces: InFlightTraces, r: RequestSpanRecord): number {
  const slot = traces.open(r.topic, r.partition, r.offset, r.start, r.queueWaitMs, r.traceState);
  const at = traces.idsAt(slot);
  traces.ids.set(idWords(r.traceId), at + ID.trace);
  traces.ids.set(idWords(r.spanId), at + ID.span);
  if (r.parentSpanId) traces.ids.set(idWords(r.parentSpanId), at + ID.parent);
  traces.requestIds[slot] = r.requestId;
  return slot;
}

describe('span records', () => {
  it('come out of the columns as they went in, in order, after crossing a thread boundary', () => {
    const writer = new SpanRecordWriter(5);
    const written = [
      record(0),
      record(1, { outcome: 'dead-letter', errorCode: 'WRONG_SHAPE' }),
      record(2, {
        outcome: 'abandoned',
        abandonReason: 'shutdown',
        batchWaitMs: Number.NaN,
        inferenceMs: Number.NaN,
        batchSpanId: '',
      }),
      // Past the short-string loop and past the text column's first size (it grows).
      record(3, { requestId: 'x'.repeat(300), traceState: `k=${'é'.repeat(200)}` }),
    ];
    for (const r of written) writer.add(r);
    writer.addGroup({
      kind: 'infer',
      name: 'infer m',
      ids: idWords('e'.repeat(32) + 'f'.repeat(16)),
      start: 1,
      end: 2,
      attributes: { a: 1 },
      links: idWords(written[0]!.traceId + written[0]!.spanId),
      error: '',
    });
    expect(writer.size).toBe(5);
    const taken = writer.take();
    expect(writer.size).toBe(0);
    const crossed = structuredClone(taken, {
      transfer: [taken.numbers, taken.ids, taken.texts, taken.text].map(
        (column) => column.buffer as ArrayBuffer,
      ),
    });
    expect(readAll(crossed)).toEqual(written);
    expect(crossed.topics).toEqual(['topic-0', 'topic-1', 'topic-2', 'topic-3']);
    expect(crossed.groups).toHaveLength(1);
  });

  it('refuse more than their capacity instead of overwriting', () => {
    const writer = new SpanRecordWriter(1);
    writer.add(record(0));
    expect(writer.full).toBe(true);
    expect(() => writer.add(record(1))).toThrow(RangeError);
    // Taking starts fresh columns: the taken ones are not reused under the reader.
    const first = writer.take();
    writer.add(record(2));
    expect(readAll(first).map((r) => r.requestId)).toEqual(['req-0']);
  });
});

describe('in-flight traces', () => {
  it('hand a request over as it was noted: ids, times, batch, outcome', () => {
    const traces = new InFlightTraces(2);
    const r = record(1);
    const slot = openSlot(traces, r);
    traces.setBatchWait(slot, r.batchWaitMs);
    traces.setInference(
      slot,
      idWords('0'.repeat(32) + r.batchSpanId),
      TRACE_ID_WORDS,
      r.inferenceMs,
    );
    const writer = new SpanRecordWriter(1);
    writer.addInFlight(traces, slot, r.end, 'dead-letter', 'WRONG_SHAPE', '');
    expect(readAll(writer.take())).toEqual([
      { ...r, outcome: 'dead-letter', errorCode: 'WRONG_SHAPE' },
    ]);
  });

  it('reuse a closed slot with nothing of its last request left, and grow past their capacity', () => {
    const traces = new InFlightTraces(1);
    const first = openSlot(traces, record(0, { traceState: 'k=v' }));
    traces.setBatchWait(first, 7);
    traces.close(first);
    expect(traces.live).toBe(0);
    const reused = traces.open('t', 0, 5, 10, 0, '');
    expect(reused).toBe(first);
    const at = traces.idsAt(reused);
    expect(Array.from(traces.ids.subarray(at, at + ID.batch + SPAN_ID_WORDS))).toEqual(
      new Array(ID.batch + SPAN_ID_WORDS).fill(0),
    );
    expect(traces.traceStates[reused]).toBe('');
    expect(traces.requestIds[reused]).toBe('');
    expect(traces.sampled(reused)).toBe(true);

    // Five requests at once in a table made for one: earlier rows survive the growth.
    const records = [1, 2, 3, 4].map((i) => record(i));
    const slots = records.map((r) => openSlot(traces, r));
    expect(traces.live).toBe(5);
    expect(new Set([reused, ...slots]).size).toBe(5);
    const links = new Int32Array(records.length * GROUP_ID_WORDS);
    slots.forEach((slot, i) => traces.copyLink(slot, links, i * GROUP_ID_WORDS));
    records.forEach((r, i) => {
      expect(wordsToHex(links, i * GROUP_ID_WORDS, TRACE_ID_WORDS)).toBe(r.traceId);
      expect(wordsToHex(links, i * GROUP_ID_WORDS + TRACE_ID_WORDS, SPAN_ID_WORDS)).toBe(r.spanId);
    });
    for (const slot of [reused, ...slots]) traces.close(slot);
    expect(traces.live).toBe(0);
  });

  it('take freed slots again first freed, first taken, and new ones in order', () => {
    const traces = new InFlightTraces(4);
    const open = () => traces.open('t', 0, 0, 0, 0, '');
    expect([open(), open(), open()]).toEqual([0, 1, 2]);
    traces.close(2);
    traces.close(0);
    // Slot 3 was never taken: it comes first, then the two freed, in the order they were freed.
    expect([open(), open(), open()]).toEqual([3, 2, 0]);
    // All four taken: the table grows, and the new slots come in order.
    expect([open(), open()]).toEqual([4, 5]);
    traces.close(1);
    expect([open(), open()]).toEqual([6, 7]);
    expect(open()).toBe(1);
  });

  it('keep the sampling decision and the send per slot, apart', () => {
    const traces = new InFlightTraces(1);
    const slot = traces.open('t', 0, 0, 0, 0, '');
    expect(traces.sendOf(slot)).toBe(-1);
    traces.setSampled(slot, false);
    traces.setSend(slot, 41);
    expect(traces.sampled(slot)).toBe(false);
    expect(traces.sendOf(slot)).toBe(41);
    traces.setSampled(slot, true);
    expect(traces.sampled(slot)).toBe(true);
    expect(traces.sendOf(slot)).toBe(41);
    traces.setSend(slot, 0);
    expect(traces.sendOf(slot)).toBe(0);
  });

  it('mark a slot reused: its generation moves on close, and a reopened slot has no send', () => {
    const traces = new InFlightTraces(1);
    const slot = traces.open('t', 0, 0, 0, 0, '');
    const before = traces.generations[slot];
    traces.setSend(slot, 3);
    traces.close(slot);
    expect(traces.open('t', 0, 1, 0, 0, '')).toBe(slot);
    expect(traces.generations[slot]).not.toBe(before);
    expect(traces.sendOf(slot)).toBe(-1);
    // Growing keeps the generations of the slots open.
    const generation = traces.generations[slot];
    traces.open('t', 0, 2, 0, 0, '');
    expect(traces.generations[slot]).toBe(generation);
  });
});
