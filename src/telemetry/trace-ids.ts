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
/** Where a traceparent's parts start: the trace id's hex, the span id's hex, the flags' last digit. */
const TRACE_HEX_AT = 3;
const SPAN_HEX_AT = TRACE_HEX_AT + 8 * TRACE_ID_WORDS + 1;
const FLAGS_DIGIT_AT = TRACEPARENT_LENGTH - 1;

/**
 * Two hex digits per byte value as one 16-bit unit, little-endian (the first digit in the low
 * byte): a byte's digits are written with one store.
 */
const HEX_UNITS = Uint16Array.from(
  { length: 256 },
  (_, b) => HEX_PAIRS[2 * b]! | (HEX_PAIRS[2 * b + 1]! << 8),
);

/** Writes words `at`…`at + n` as lowercase hex at `pos`, two digits per store. */
function putHexUnits(view: DataView, pos: number, words: Int32Array, at: number, n: number): void {
  for (let k = 0; k < n; k++) {
    const word = words[at + k]!;
    const p = pos + 8 * k;
    view.setUint16(p, HEX_UNITS[word >>> 24]!, true);
    view.setUint16(p + 2, HEX_UNITS[(word >>> 16) & 0xff]!, true);
    view.setUint16(p + 4, HEX_UNITS[(word >>> 8) & 0xff]!, true);
    view.setUint16(p + 6, HEX_UNITS[word & 0xff]!, true);
  }
}

/**
 * A W3C traceparent (version 00) value that is written over for each request: its dashes and
 * version are written once, the ids and flags each time, two hex digits per store (25 stores
 * where writing it whole a byte at a time took 55).
 */
export class TraceparentValue {
  readonly bytes = Buffer.allocUnsafe(TRACEPARENT_LENGTH);
  private readonly view = new DataView(
    this.bytes.buffer,
    this.bytes.byteOffset,
    TRACEPARENT_LENGTH,
  );

  constructor() {
    const bytes = this.bytes;
    bytes[0] = ZERO;
    bytes[1] = ZERO;
    bytes[2] = DASH;
    bytes[SPAN_HEX_AT - 1] = DASH;
    bytes[FLAGS_DIGIT_AT - 2] = DASH;
    bytes[FLAGS_DIGIT_AT - 1] = ZERO;
  }

  /** For this trace id and span id, sampled or not; returns the bytes. */
  write(words: Int32Array, traceAt: number, spanAt: number, sampled: boolean): Buffer {
    putHexUnits(this.view, TRACE_HEX_AT, words, traceAt, TRACE_ID_WORDS);
    putHexUnits(this.view, SPAN_HEX_AT, words, spanAt, SPAN_ID_WORDS);
    this.bytes[FLAGS_DIGIT_AT] = sampled ? 0x31 : ZERO;
    return this.bytes;
  }
}

/** A W3C traceparent (version 00) for this trace id and span id, sampled or not. */
export function traceparent(
  words: Int32Array,
  traceAt: number,
  spanAt: number,
  sampled: boolean,
): string {
  return new TraceparentValue().write(words, traceAt, spanAt, sampled).toString('latin1');
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
