/**
 * A protobuf writer for the few shapes streamscore's spans need, writing the same bytes as the
 * OpenTelemetry SDK's OTLP serializer (`@opentelemetry/otlp-transformer`): minimal varints,
 * little-endian fixed64 times, UTF-8 strings. `take()` copies out what was written; `detach()`
 * hands over the buffer itself and goes on in another (export bodies are reused).
 */
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

/**
 * The writes below take the buffer and position and return the new position, so a caller that
 * has reserved room for a whole span writes it without a check or a call per field.
 */

/** A varint: a non-negative integer below 2^32, or any integer in int64 (two's complement). */
export function putVarint(buf: Uint8Array, pos: number, value: number): number {
  let p = pos;
  if (value >= 0 && value <= 0xffffffff) {
    let v = value >>> 0;
    while (v > 0x7f) {
      buf[p++] = (v & 0x7f) | 0x80;
      v >>>= 7;
    }
    buf[p++] = v;
    return p;
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
    buf[p++] = (low & 0x7f) | 0x80;
    low = ((low >>> 7) | (high << 25)) >>> 0;
    high >>>= 7;
  }
  buf[p++] = low & 0x7f;
  return p;
}

/** An HrTime ([seconds, nanoseconds]) as fixed64 nanoseconds since the epoch. */
export function putHrTime(view: DataView, pos: number, seconds: number, nanos: number): number {
  // Split as the SDK does so every product stays a safe integer (seconds × 1e9 is not).
  const lowerNanos = (seconds & 0xffff) * 1e9;
  const upperNanos = ((seconds / 0x10000) >>> 0) * 1e9;
  const low = (lowerNanos >>> 0) + ((((upperNanos & 0xffff) * 0x10000) >>> 0) + nanos);
  const high =
    (Math.floor(lowerNanos / 0x100000000) +
      ((upperNanos / 0x10000) >>> 0) +
      Math.floor(low / 0x100000000)) >>>
    0;
  view.setUint32(pos, low >>> 0, true);
  view.setUint32(pos + 4, high, true);
  return pos + 8;
}

/**
 * Epoch milliseconds (fractional) `millis[i]` as the SDK's HrTime, then as `putHrTime` writes it
 * (the value is read here, not passed: a fractional number passed to a call is boxed).
 */
export function putMillis(view: DataView, pos: number, millis: Float64Array, i: number): number {
  const epochMillis = millis[i]!;
  return putHrTime(
    view,
    pos,
    Math.trunc(epochMillis / 1000),
    Math.round((epochMillis % 1000) * 1e6),
  );
}

/** A length-delimited bytes field's length and bytes from an id's words: 4 bytes per word. */
export function putIdBytes(
  buf: Uint8Array,
  pos: number,
  words: Int32Array,
  at: number,
  n: number,
): number {
  let p = pos;
  buf[p++] = 4 * n;
  for (let k = 0; k < n; k++) {
    const word = words[at + k]!;
    buf[p++] = word >>> 24;
    buf[p++] = (word >>> 16) & 0xff;
    buf[p++] = (word >>> 8) & 0xff;
    buf[p++] = word & 0xff;
  }
  return p;
}

/**
 * Up to this many bytes are copied by a loop: `set` costs ~20 ns whatever the length, a loop
 * ~1.5 ns a byte (node 20, this machine).
 */
export const LOOP_COPY_MAX = 12;
/** Part of an array is copied with `set` from this length on: its view is an object to collect. */
const VIEW_COPY_MIN = 64;

/** Bytes as they are (encoded once, copied per span). */
export function putBytes(buf: Uint8Array, pos: number, bytes: Uint8Array): number {
  const length = bytes.length;
  if (length <= LOOP_COPY_MAX) {
    for (let i = 0; i < length; i++) buf[pos + i] = bytes[i]!;
  } else {
    buf.set(bytes, pos);
  }
  return pos + length;
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

  /**
   * Everything written, in the writer's own buffer (not copied); the writer starts empty again
   * in `next`, or in a new buffer of its current size.
   */
  detach(next?: Uint8Array): Uint8Array {
    const out = this.buf.subarray(0, this.pos);
    this.buf = next ?? new Uint8Array(this.buf.length);
    this.view = new DataView(this.buf.buffer, this.buf.byteOffset, this.buf.byteLength);
    this.pos = 0;
    return out;
  }

  /**
   * Room for `n` more bytes, for a caller that writes them itself: it writes into `bytes` (and
   * `view`) from `pos` and sets `pos` after. Both may be replaced by any other write.
   */
  reserve(n: number): void {
    this.room(n);
  }

  get bytes(): Uint8Array {
    return this.buf;
  }

  get dataView(): DataView {
    return this.view;
  }

  /** A non-negative integer below 2^32, or any integer in int64 (two's complement, 10 bytes). */
  varint(value: number): void {
    this.room(10);
    this.pos = putVarint(this.buf, this.pos, value);
  }

  fixed32(value: number): void {
    this.room(4);
    this.view.setUint32(this.pos, value >>> 0, true);
    this.pos += 4;
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
    const whole = start === 0 && length === bytes.length;
    if (whole && length > LOOP_COPY_MAX) {
      buf.set(bytes, this.pos);
    } else if (length < VIEW_COPY_MIN) {
      for (let i = 0; i < length; i++) buf[this.pos + i] = bytes[start + i]!;
    } else {
      buf.set(bytes.subarray(start, start + length), this.pos);
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
    this.pos = putIdBytes(this.buf, this.pos, words, at, n);
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
