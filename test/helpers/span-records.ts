import type { RequestSpanRecord } from '../../src/telemetry/span-records.js';

const hex = (i: number, length: number, fill: string): string =>
  i.toString(16).padStart(length, fill);

/** A finished request's span record, numbered `i` (ids, offset and times follow from it). */
export const requestSpanRecord = (
  i: number,
  overrides: Partial<RequestSpanRecord> = {},
): RequestSpanRecord => ({
  topic: 'requests',
  partition: i % 4,
  offset: 1000 + i,
  traceId: hex(i, 32, 'a'),
  spanId: hex(i, 16, 'b'),
  // Odd requests carry a producer's context, even ones start their trace here.
  parentSpanId: i % 2 ? hex(i, 16, 'c') : '',
  traceState: '',
  start: 1_795_000_000_000.125 + i,
  end: 1_795_000_000_004.9 + i,
  queueWaitMs: 2.5,
  batchWaitMs: 1,
  inferenceMs: 0.75,
  requestId: `req-${i}`,
  batchSpanId: 'd'.repeat(16),
  outcome: 'result',
  errorCode: '',
  abandonReason: '',
  ...overrides,
});

export { hex as hexId };
