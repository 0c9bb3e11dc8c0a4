import { randomBytes } from 'node:crypto';
import { createRequire } from 'node:module';
import { describe, expect, it } from 'vitest';

/**
 * patches/kafkajs+2.2.4.patch has kafkajs checksum record batches with crc-32's CRC-32C instead of
 * its own byte loop. A wrong checksum makes the broker refuse every produce request
 * (CORRUPT_MESSAGE), so the patched function must give kafkajs's values: it is compared with
 * kafkajs's own loop (still shipped, unused) and with the standard check value.
 */
const require = createRequire(import.meta.url);
const patched = require('kafkajs/src/protocol/recordBatch/crc32C') as (b: Buffer) => number;
const kafkajsLoop = require('kafkajs/src/protocol/recordBatch/crc32C/crc32C') as (
  b: Buffer,
) => number;

describe('the record batch checksum (CRC-32C)', () => {
  it('is the standard CRC-32C: 0xE3069283 for "123456789", 0 for nothing', () => {
    expect(patched(Buffer.from('123456789'))).toBe(0xe3069283);
    expect(patched(Buffer.alloc(0))).toBe(0);
  });

  it("gives kafkajs's own values, unsigned, on buffers of every length up to 70 and on large ones", () => {
    const lengths = [...Array.from({ length: 71 }, (_, n) => n), 1023, 4096, 65_537, 1_000_003];
    for (const length of lengths) {
      const bytes = randomBytes(length);
      const sum = patched(bytes);
      expect(sum, `length ${length}`).toBe(kafkajsLoop(bytes));
      expect(sum).toBeGreaterThanOrEqual(0);
    }
    // A view into a larger buffer is checksummed over its own bytes only.
    const whole = randomBytes(300);
    const view = whole.subarray(17, 250);
    expect(patched(view)).toBe(kafkajsLoop(Buffer.from(view)));
  });
});
