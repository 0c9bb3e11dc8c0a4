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
  writeHexWords,
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

  it('write every byte value as its two lowercase hex digits', () => {
    // Each word holds four different bytes: 0x00010203, 0x04050607, … 0xfcfdfeff.
    const words = Int32Array.from({ length: 64 }, (_, k) => {
      const b = 4 * k;
      return (b << 24) | ((b + 1) << 16) | ((b + 2) << 8) | (b + 3) | 0;
    });
    const out = Buffer.alloc(2 + 512);
    const end = writeHexWords(out, 1, words, 0, words.length);
    expect(end).toBe(513);
    const expected = Array.from({ length: 256 }, (_, b) => b.toString(16).padStart(2, '0'));
    expect(out.toString('latin1', 1, end)).toBe(expected.join(''));
    // Nothing written outside.
    expect(out[0]).toBe(0);
    expect(out[513]).toBe(0);
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

  it('are drawn as a trace id and span id together, valid and distinct', () => {
    const pool = new IdWordPool();
    const words = new Int32Array(1 + TRACE_ID_WORDS + SPAN_ID_WORDS);
    const seen = new Set<string>();
    for (let i = 0; i < 1000; i++) {
      pool.drawTraceAndSpan(words, 1);
      const traceId = wordsToHex(words, 1, TRACE_ID_WORDS);
      const spanId = wordsToHex(words, 1 + TRACE_ID_WORDS, SPAN_ID_WORDS);
      expect(isValidTraceId(traceId) && isValidSpanId(spanId)).toBe(true);
      seen.add(`${traceId}-${spanId}`);
    }
    expect(words[0]).toBe(0);
    expect(seen.size).toBe(1000);
  });

  it('are drawn again when either the trace id or the span id came out all zero', () => {
    // Each refill hands out: a zero trace id with a span id, a trace id with a zero span id,
    // then valid ids.
    const fills = [
      [0, 0, 0, 0, 5, 6],
      [1, 2, 3, 4, 0, 0],
      [7, 8, 9, 10, 11, 12],
    ];
    const pool = new IdWordPool((p) => {
      p.fill(0);
      let at = 0;
      for (const ids of fills) for (const w of ids) p[at++] = w;
    });
    const words = new Int32Array(TRACE_ID_WORDS + SPAN_ID_WORDS);
    pool.drawTraceAndSpan(words, 0);
    expect([...words]).toEqual([7, 8, 9, 10, 11, 12]);
    // draw() as well: a zero span id is skipped.
    const span = new Int32Array(SPAN_ID_WORDS);
    const zeros = new IdWordPool((p) => {
      p.fill(0);
      p.set([3, 4], 2);
    });
    zeros.draw(span, 0, SPAN_ID_WORDS);
    expect([...span]).toEqual([3, 4]);
  });
});
