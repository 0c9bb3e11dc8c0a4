/**
 * Trace and span ids as 32-bit words: a trace id is 4 words, a span id 2, each word four of the
 * id's bytes, big-endian, as a signed int32 (`| 0`).
 *
 * Why words, not the usual hex strings: the worker holds ids for every request in flight and
 * hands every finished one to the tracing thread. As strings that was two strings made per
 * request, kept alive (and copied by each young-generation GC) until the request was answered,
 * then cloned across threads and turned back into bytes there. Words sit in typed arrays: no
 * object per id, nothing for the GC to copy, and they cross threads as one moved buffer. Hex is
 * made only where it is read: a result's `traceparent` header and log lines.
 */
import { randomFillSync } from 'node:crypto';

export const TRACE_ID_WORDS = 4;
export const SPAN_ID_WORDS = 2;

/** Two hex digits ('00'–'ff') per byte value: byte b's are at 2b and 2b + 1. */
const HEX_PAIRS = Uint8Array.from({ length: 512 }, (_, i) =>
  '0123456789abcdef'.charCodeAt(i & 1 ? (i >>> 1) & 15 : i >>> 5),
);

/** Writes words `at`…`at + n` of `words` as lowercase hex into `out` from `pos`; returns the end. */
export function writeHexWords(
  out: Uint8Array,
  pos: number,
  words: Int32Array,
  at: number,
  n: number,
): number {
  // A byte per lookup, not a nibble: a result's traceparent is 24 bytes of hex per request.
  for (let k = 0; k < n; k++) {
    const word = words[at + k]!;
    for (let shift = 24; shift >= 0; shift -= 8) {
      const pair = ((word >>> shift) & 0xff) << 1;
      out[pos++] = HEX_PAIRS[pair]!;
      out[pos++] = HEX_PAIRS[pair + 1]!;
    }
  }
  return pos;
}

const scratch = Buffer.alloc(64);

/** The hex id of words `at`…`at + n` (n = 4: a trace id; 2: a span id). */
export function wordsToHex(words: Int32Array, at: number, n: number): string {
  const end = writeHexWords(scratch, 0, words, at, n);
  return scratch.toString('latin1', 0, end);
}

/**
 * Words from a hex id of `n` words (8n lowercase hex digits, as the W3C traceparent checks
 * them); '' gives zero words (no id).
 */
export function hexToWords(hex: string, out: Int32Array, at: number, n: number): void {
  for (let k = 0; k < n; k++) {
    out[at + k] = hex.length === 0 ? 0 : parseInt(hex.slice(8 * k, 8 * k + 8), 16) | 0;
  }
}

/** The words of a hex id, for tests and for callers that hold hex. */
export function idWords(hex: string): Int32Array {
  const words = new Int32Array(hex.length >>> 3);
  hexToWords(hex, words, 0, words.length);
  return words;
}

/** Whether words `at`…`at + n` are all zero (an invalid id: no id). */
export function isZeroId(words: Int32Array, at: number, n: number): boolean {
  for (let k = 0; k < n; k++) if (words[at + k] !== 0) return false;
  return true;
}

/** Bytes of a version-00 traceparent: `00-<32 hex>-<16 hex>-<2 hex>`. */
export const TRACEPARENT_LENGTH = 55;
const DASH = 0x2d;
const ZERO = 0x30;

/**
 * Writes a W3C traceparent (version 00) for this trace id and span id, sampled or not, into `out`
 * at `pos` (TRACEPARENT_LENGTH bytes); returns the end.
 */
export function writeTraceparent(
  out: Uint8Array,
  pos: number,
  words: Int32Array,
  traceAt: number,
  spanAt: number,
  sampled: boolean,
): number {
  out[pos] = ZERO;
  out[pos + 1] = ZERO;
  out[pos + 2] = DASH;
  let p = writeHexWords(out, pos + 3, words, traceAt, TRACE_ID_WORDS);
  out[p++] = DASH;
  p = writeHexWords(out, p, words, spanAt, SPAN_ID_WORDS);
  out[p] = DASH;
  out[p + 1] = ZERO;
  out[p + 2] = sampled ? 0x31 : ZERO;
  return p + 3;
}

const traceparentScratch = Buffer.alloc(TRACEPARENT_LENGTH);

/** A W3C traceparent (version 00) for this trace id and span id, sampled or not. */
export function traceparent(
  words: Int32Array,
  traceAt: number,
  spanAt: number,
  sampled: boolean,
): string {
  writeTraceparent(traceparentScratch, 0, words, traceAt, spanAt, sampled);
  return traceparentScratch.toString('latin1');
}

/**
 * Random ids, drawn from a buffer refilled by the CSPRNG 8 KiB at a time (a tenth of the cost of
 * the SDK's generator, which draws Math.random per 4 bytes). All-zero ids are invalid and drawn
 * again.
 */
export class IdWordPool {
  private readonly pool = new Int32Array(2048);
  private next = this.pool.length;

  /** `fill` refills the pool (tests give their own). */
  constructor(private readonly fill: (pool: Int32Array) => void = randomFillSync) {}

  /** Writes a new id of `n` words into `out` at `at`. */
  draw(out: Int32Array, at: number, n: number): void {
    do this.take(out, at, n);
    while (isZeroId(out, at, n));
  }

  /**
   * A new trace id and span id, which sit next to each other from `at` (TRACE_ID_WORDS then
   * SPAN_ID_WORDS words), in one draw; neither is all zero.
   */
  drawTraceAndSpan(out: Int32Array, at: number): void {
    do this.take(out, at, TRACE_ID_WORDS + SPAN_ID_WORDS);
    while (isZeroId(out, at, TRACE_ID_WORDS) || isZeroId(out, at + TRACE_ID_WORDS, SPAN_ID_WORDS));
  }

  /** The pool's next `n` words, refilled first when it has fewer. */
  private take(out: Int32Array, at: number, n: number): void {
    if (this.next + n > this.pool.length) {
      this.fill(this.pool);
      this.next = 0;
    }
    for (let k = 0; k < n; k++) out[at + k] = this.pool[this.next++]!;
  }
}
