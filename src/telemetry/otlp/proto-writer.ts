/**
 * A protobuf writer for the few shapes streamscore's spans need, writing the same bytes as the
 * OpenTelemetry SDK's OTLP serializer (`@opentelemetry/otlp-transformer`): minimal varints,
 * little-endian fixed64 times, UTF-8 strings. One writer is reused for every export; `take()`
 * copies out what was written.
 */
import { writeHexWords } from '../trace-ids.js';

/** Bytes a varint of `value` (0 ≤ value < 2^32) takes. */
export function varintSize(value: number): number {
  if (value < 0x80) return 1;
  if (value < 0x4000) return 2;
  if (value < 0x200000) return 3;
  if (value < 0x10000000) return 4;
  return 5;
}

/** UTF-8 length of a string (what `TextEncoder` would write, lone surrogates as U+FFFD). */
export function utf8Length(s: string): number {
  for (let i = 0; i < s.length; i++) {
    if (s.charCodeAt(i) >= 0x80) return Buffer.byteLength(s, 'utf8');
  }
  return s.length;
}

const encoder = new TextEncoder();

/** A string's UTF-8 bytes, for values encoded once and copied many times. */
export function utf8(s: string): Uint8Array {
  return encoder.encode(s);
}

export class ProtoWriter {
  private buf: Uint8Array;
  private view: DataView;
  pos = 0;

  constructor(initialSize = 1 << 16) {
    this.buf = new Uint8Array(initialSize);
    this.view = new DataView(this.buf.buffer);
  }

  /** Room for `n` more bytes. */
  private room(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.pos + n) size *= 2;
    const grown = new Uint8Array(size);
    grown.set(this.buf.subarray(0, this.pos));
    this.buf = grown;
    this.view = new DataView(grown.buffer);
  }

  /** A copy of everything written; the writer starts empty again. */
  take(): Uint8Array {
    const out = this.buf.slice(0, this.pos);
    this.pos = 0;
    return out;
  }

  /** A non-negative integer below 2^32, or any integer in int64 (two's complement, 10 bytes). */
  varint(value: number): void {
    this.room(10);
    const buf = this.buf;
    if (value >= 0 && value <= 0xffffffff) {
      let v = value >>> 0;
      while (v > 0x7f) {
        buf[this.pos++] = (v & 0x7f) | 0x80;
        v >>>= 7;
      }
      buf[this.pos++] = v;
      return;
    }
    let low: number;
    let high: number;
    if (value >= 0) {
      low = value >>> 0;
      high = (value / 0x100000000) >>> 0;
    } else {
      const abs = Math.abs(value);
      low = ~(abs >>> 0) >>> 0;
      high = ~((abs / 0x100000000) >>> 0) >>> 0;
      low = (low + 1) >>> 0;
      if (low === 0) high = (high + 1) >>> 0;
    }
    while (high > 0 || low > 0x7f) {
      buf[this.pos++] = (low & 0x7f) | 0x80;
      low = ((low >>> 7) | (high << 25)) >>> 0;
      high >>>= 7;
    }
    buf[this.pos++] = low & 0x7f;
  }

  fixed32(value: number): void {
    this.room(4);
    this.view.setUint32(this.pos, value >>> 0, true);
    this.pos += 4;
  }

  /** An OpenTelemetry HrTime ([seconds, nanoseconds]) as fixed64 nanoseconds since the epoch. */
  hrTime(seconds: number, nanos: number): void {
    // Split as the SDK does so every product stays a safe integer (seconds × 1e9 is not).
    const lowerNanos = (seconds & 0xffff) * 1e9;
    const upperNanos = ((seconds / 0x10000) >>> 0) * 1e9;
    const low = (lowerNanos >>> 0) + ((((upperNanos & 0xffff) * 0x10000) >>> 0) + nanos);
    const high =
      (Math.floor(lowerNanos / 0x100000000) +
        ((upperNanos / 0x10000) >>> 0) +
        Math.floor(low / 0x100000000)) >>>
      0;
    this.room(8);
    this.view.setUint32(this.pos, low >>> 0, true);
    this.view.setUint32(this.pos + 4, high, true);
    this.pos += 8;
  }

  double(value: number): void {
    this.room(8);
    this.view.setFloat64(this.pos, value, true);
    this.pos += 8;
  }

  /** Bytes as they are (already a field, or part of one): `length` of them from `start`. */
  raw(bytes: Uint8Array, start = 0, length = bytes.length - start): void {
    this.room(length);
    const buf = this.buf;
    if (length < 64) {
      // A call into the copy builtin costs more than this loop for a few bytes.
      for (let i = 0; i < length; i++) buf[this.pos + i] = bytes[start + i]!;
    } else {
      // Whole arrays (the encoded-once parts) are copied without making a view of them.
      buf.set(
        start === 0 && length === bytes.length ? bytes : bytes.subarray(start, start + length),
        this.pos,
      );
    }
    this.pos += length;
  }

  /** A length-delimited string (the length is its UTF-8 length, `utf8Length`). */
  string(s: string, length: number): void {
    this.varint(length);
    this.room(length);
    if (length === s.length) {
      const buf = this.buf;
      for (let i = 0; i < length; i++) buf[this.pos + i] = s.charCodeAt(i);
      this.pos += length;
    } else {
      this.pos += encoder.encodeInto(s, this.buf.subarray(this.pos)).written;
    }
  }

  /** A length-delimited bytes field from an id's words (trace-ids.ts): 4 bytes per word. */
  idBytes(words: Int32Array, at: number, n: number): void {
    this.room(4 * n + 1);
    const buf = this.buf;
    let p = this.pos;
    buf[p++] = 4 * n;
    for (let k = 0; k < n; k++) {
      const word = words[at + k]!;
      buf[p++] = word >>> 24;
      buf[p++] = (word >>> 16) & 0xff;
      buf[p++] = (word >>> 8) & 0xff;
      buf[p++] = word & 0xff;
    }
    this.pos = p;
  }

  /** A length-delimited string field: an id's words as lowercase hex, 8 digits per word. */
  hexString(words: Int32Array, at: number, n: number): void {
    this.room(8 * n + 1);
    this.buf[this.pos++] = 8 * n;
    this.pos = writeHexWords(this.buf, this.pos, words, at, n);
  }

  /**
   * Starts a length-delimited message whose length is not known yet: reserves `expected` bytes
   * for its length varint. `end` writes it, moving the message when the guess was wrong.
   */
  begin(expected = 2): number {
    this.room(expected);
    const at = this.pos;
    this.pos += expected;
    return at;
  }

  end(at: number, expected = 2): void {
    const length = this.pos - at - expected;
    const size = varintSize(length);
    if (size !== expected) {
      this.room(size - expected);
      this.buf.copyWithin(at + size, at + expected, this.pos);
      this.pos += size - expected;
    }
    let v = length;
    let p = at;
    while (v > 0x7f) {
      this.buf[p++] = (v & 0x7f) | 0x80;
      v >>>= 7;
    }
    this.buf[p] = v;
  }
}
