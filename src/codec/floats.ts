import { endianness } from 'node:os';
import { StreamscoreError } from '../errors.js';

const LITTLE_ENDIAN_HOST = endianness() === 'LE';

/**
 * Little-endian float32 bytes → Float32Array. A view when the bytes happen to be 4-byte aligned
 * (no copy), otherwise exactly one copy: typed arrays cannot start at an unaligned offset.
 */
export function floatsFromBytes(bytes: Buffer): Float32Array {
  if (bytes.length % 4 !== 0) {
    throw new StreamscoreError(
      'DECODE_FAILED',
      `float32 bytes must be a multiple of 4 long, got ${bytes.length}`,
    );
  }
  const count = bytes.length / 4;
  if (!LITTLE_ENDIAN_HOST) {
    const out = new Float32Array(count);
    for (let i = 0; i < count; i++) out[i] = bytes.readFloatLE(i * 4);
    return out;
  }
  if (bytes.byteOffset % 4 === 0) return new Float32Array(bytes.buffer, bytes.byteOffset, count);
  return new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length));
}

/**
 * True when raw little-endian bytes may be copied as they are into float32 memory: they are
 * unaligned, so no view is possible, but the host is little-endian, so no conversion is needed.
 */
export function copyableAsFloats(bytes: Buffer): boolean {
  return LITTLE_ENDIAN_HOST && bytes.byteOffset % 4 !== 0;
}

/** Float32Array → little-endian bytes, sharing memory on little-endian hosts. */
export function bytesFromFloats(values: Float32Array): Buffer {
  if (LITTLE_ENDIAN_HOST) return Buffer.from(values.buffer, values.byteOffset, values.byteLength);
  const out = Buffer.alloc(values.length * 4);
  for (let i = 0; i < values.length; i++) out.writeFloatLE(values[i]!, i * 4);
  return out;
}
