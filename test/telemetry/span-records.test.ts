import { describe, expect, it } from 'vitest';
import {
  forEachRequestSpan,
  SpanRecordWriter,
  type RequestSpanRecord,
} from '../../src/telemetry/span-records.js';
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

describe('span records', () => {
  it('come out of the columns as they went in, in order', () => {
    const writer = new SpanRecordWriter(4);
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
    ];
    for (const r of written) writer.add(r);
    writer.addGroup({
      kind: 'infer',
      name: 'infer m',
      traceId: 'e'.repeat(32),
      spanId: 'f'.repeat(16),
      start: 1,
      end: 2,
      attributes: { a: 1 },
      links: [written[0]!.traceId, written[0]!.spanId],
      error: '',
    });
    expect(writer.size).toBe(4);
    const taken = writer.take();
    expect(writer.size).toBe(0);
    const read: RequestSpanRecord[] = [];
    forEachRequestSpan(structuredClone(taken), (r) => read.push(r));
    expect(read).toEqual(written);
    expect(taken.groups).toHaveLength(1);
  });

  it('refuse more than their capacity instead of overwriting', () => {
    const writer = new SpanRecordWriter(1);
    writer.add(record(0));
    expect(writer.full).toBe(true);
    expect(() => writer.add(record(1))).toThrow(RangeError);
    // Taking starts a fresh, empty buffer: the taken one is not reused under the reader.
    const first = writer.take();
    writer.add(record(2));
    const seen: string[] = [];
    forEachRequestSpan(first, (r) => seen.push(r.requestId));
    expect(seen).toEqual(['req-0']);
  });
});
