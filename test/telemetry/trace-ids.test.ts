import { isValidSpanId, isValidTraceId } from '@opentelemetry/api';
import { parseTraceParent } from '@opentelemetry/core';
import { describe, expect, it } from 'vitest';
import {
  hexToWords,
  IdWordPool,
  idWords,
  isZeroId,
  SPAN_ID_WORDS,
  TRACE_ID_WORDS,
  traceparent,
  wordsToHex,
} from '../../src/telemetry/trace-ids.js';

const IDS = [
  '4bf92f3577b34da6a3ce929d0e0e4736',
  '00000000000000000000000000000001',
  'ffffffffffffffffffffffffffffffff',
  '80000000000000007fffffff00000000',
];

describe('trace and span ids as words', () => {
  it('turn back into the same hex, high bits and leading zeros included', () => {
    for (const hex of [...IDS, '00f067aa0ba902b7', 'ffffffff00000000']) {
      const words = idWords(hex);
      expect(words).toHaveLength(hex.length / 8);
      expect(wordsToHex(words, 0, words.length)).toBe(hex);
    }
  });

  it('are big-endian: the bytes on the wire are the hex id’s bytes', () => {
    const words = idWords('00f067aa0ba902b7');
    const bytes = Buffer.alloc(8);
    bytes.writeInt32BE(words[0]!, 0);
    bytes.writeInt32BE(words[1]!, 4);
    expect(bytes.toString('hex')).toBe('00f067aa0ba902b7');
  });

  it('read an empty id as zero words: no id', () => {
    const words = new Int32Array([7, 7]);
    hexToWords('', words, 0, SPAN_ID_WORDS);
    expect(isZeroId(words, 0, SPAN_ID_WORDS)).toBe(true);
  });

  it('write a traceparent the SDK’s propagator parses back to the same context', () => {
    const words = idWords(IDS[0]! + '00f067aa0ba902b7');
    for (const sampled of [true, false]) {
      const header = traceparent(words, 0, TRACE_ID_WORDS, sampled);
      expect(header).toBe(`00-${IDS[0]}-00f067aa0ba902b7-0${sampled ? 1 : 0}`);
      expect(parseTraceParent(header)).toEqual({
        traceId: IDS[0],
        spanId: '00f067aa0ba902b7',
        traceFlags: sampled ? 1 : 0,
      });
    }
  });

  it('are drawn valid and distinct', () => {
    const pool = new IdWordPool();
    const words = new Int32Array(TRACE_ID_WORDS + SPAN_ID_WORDS);
    const seen = new Set<string>();
    // More than one refill of the pool (2,048 words).
    for (let i = 0; i < 1000; i++) {
      pool.draw(words, 0, TRACE_ID_WORDS);
      pool.draw(words, TRACE_ID_WORDS, SPAN_ID_WORDS);
      const traceId = wordsToHex(words, 0, TRACE_ID_WORDS);
      const spanId = wordsToHex(words, TRACE_ID_WORDS, SPAN_ID_WORDS);
      expect(isValidTraceId(traceId) && isValidSpanId(spanId)).toBe(true);
      seen.add(traceId);
    }
    expect(seen.size).toBe(1000);
  });
});
