import { createRequire } from 'node:module';
import { describe, expect, it } from 'vitest';

/**
 * patches/kafkajs+2.2.4.patch rewrites how kafkajs encodes one record (headers inline, one
 * encoder of the record's size) because the original allocated 512 zeroed bytes per header, and
 * how its Encoder writes varints (in place, not through an array and a Buffer each; 32-bit varlongs
 * without Long). The bytes on the wire must not change: these compare the patched varints with
 * kafkajs 2.2.4's own algorithm (kept below as the reference) and its decoder, and the patched
 * record with the original composition, rebuilt from kafkajs's Encoder and Header modules, read
 * back with kafkajs's record decoder. The patched Encoder also leaves its buffers unzeroed: a
 * produce request must come out the same whatever those buffers held.
 */
const require = createRequire(import.meta.url);
type Headers = Record<string, string | Buffer | (string | Buffer)[]>;
interface EncoderInstance {
  buffer: Buffer;
  writeUVarInt(v: number): EncoderInstance;
  writeVarInt(v: number): EncoderInstance;
  writeInt8(v: number): EncoderInstance;
  writeVarLong(v: number): EncoderInstance;
  writeVarIntBytes(v: Buffer | string | null): EncoderInstance;
  writeVarIntArray(v: EncoderInstance[]): EncoderInstance;
}
const Encoder = require('kafkajs/src/protocol/encoder') as {
  new (initialSize?: number): EncoderInstance;
  encodeZigZag64(v: number): Long;
  sizeOfVarInt(v: number): number;
  sizeOfVarLong(v: number): number;
  sizeOfVarIntBytes(v: Buffer | string | null): number;
};
const Decoder = require('kafkajs/src/protocol/decoder') as new (buffer: Buffer) => {
  offset: number;
  readVarInt(): number;
  readVarLong(): Long;
};
/** The `long` package's Long, as kafkajs uses it. */
interface Long {
  and(other: bigint | number | Long): Long;
  or(other: number): Long;
  notEquals(other: Long): boolean;
  shiftRightUnsigned(bits: number): Long;
  toInt(): number;
  toString(): string;
}
const LongClass = require('kafkajs/src/utils/long') as { fromInt(v: number): Long };
const Header = require('kafkajs/src/protocol/recordBatch/header/v0') as (h: {
  key: string;
  value: string | Buffer;
}) => EncoderInstance;
const Record = require('kafkajs/src/protocol/recordBatch/record/v0') as (r: {
  offsetDelta?: number;
  timestampDelta?: number;
  key: Buffer | null;
  value: Buffer | null;
  headers?: Headers;
}) => EncoderInstance;
const decodeRecord = require('kafkajs/src/protocol/recordBatch/record/v0/decoder') as (
  decoder: InstanceType<typeof Decoder>,
  batch: { firstOffset: string; firstTimestamp: string; magicByte: number },
) => {
  offset: string;
  timestamp: string;
  key: Buffer | null;
  value: Buffer | null;
  headers: Record<string, Buffer | Buffer[]>;
};
const produceRequest = require('kafkajs/src/protocol/requests/produce/v3/request') as (r: {
  acks: number;
  timeout: number;
  topicData: {
    topic: string;
    partitions: {
      partition: number;
      firstSequence: number;
      messages: { key: Buffer | null; value: Buffer | null; headers: Headers; timestamp: number }[];
    }[];
  }[];
}) => { encode(): Promise<EncoderInstance> };
const readFile = (path: string) =>
  (require('node:fs') as typeof import('node:fs')).readFileSync(require.resolve(path), 'utf8');

/** kafkajs 2.2.4's writeUVarInt as published: LEB128 through an array. */
function referenceUVarInt(value: number): Buffer {
  const bytes: number[] = [];
  while ((value & 0xffffff80) !== 0) {
    bytes.push((value & 0x7f) | 0x80);
    value >>>= 7;
  }
  bytes.push(value & 0x7f);
  return Buffer.from(bytes);
}

/** kafkajs 2.2.4's writeVarLong as published: zigzag and LEB128 on a Long. */
function referenceVarLong(value: number): Buffer {
  const bytes: number[] = [];
  let long = Encoder.encodeZigZag64(value);
  while (long.and(0xffffffffffffff80n).notEquals(LongClass.fromInt(0))) {
    bytes.push(long.and(0x7f).or(0x80).toInt());
    long = long.shiftRightUnsigned(7);
  }
  bytes.push(long.toInt());
  return Buffer.from(bytes);
}

const VARINT_VALUES = [
  0,
  1,
  63,
  64,
  127,
  128,
  300,
  16_383,
  16_384,
  2 ** 21 - 1,
  2 ** 21,
  2 ** 28,
  2 ** 31 - 1,
  -1,
  -64,
  -65,
  -(2 ** 31),
  70_000,
];
const VARLONG_VALUES = [
  ...VARINT_VALUES,
  2 ** 31,
  -(2 ** 31) - 1,
  2 ** 32 + 5,
  -(2 ** 40),
  1_795_000_000_000,
  2 ** 53 - 1,
];

/** kafkajs 2.2.4's record encoding as published, before the patch. */
function unpatched(r: {
  offsetDelta: number;
  timestampDelta: number;
  key: Buffer | null;
  value: Buffer | null;
  headers: Headers;
}): Buffer {
  const headers = Object.entries(r.headers).flatMap(([key, value]) =>
    Array.isArray(value) ? value.map((v) => ({ key, value: v })) : [{ key, value }],
  );
  let headersSize = Encoder.sizeOfVarInt(headers.length);
  for (const h of headers) {
    const k = Buffer.byteLength(h.key);
    const v = Buffer.byteLength(h.value);
    headersSize += Encoder.sizeOfVarInt(k) + k + Encoder.sizeOfVarInt(v) + v;
  }
  const size =
    1 +
    Encoder.sizeOfVarLong(r.timestampDelta) +
    Encoder.sizeOfVarInt(r.offsetDelta) +
    Encoder.sizeOfVarIntBytes(r.key) +
    Encoder.sizeOfVarIntBytes(r.value) +
    headersSize;
  return new Encoder()
    .writeVarInt(size)
    .writeInt8(0)
    .writeVarLong(r.timestampDelta)
    .writeVarInt(r.offsetDelta)
    .writeVarIntBytes(r.key)
    .writeVarIntBytes(r.value)
    .writeVarIntArray(headers.map(Header)).buffer;
}

const CASES: { name: string; key: Buffer | null; value: Buffer | null; headers: Headers }[] = [
  { name: 'no headers', key: Buffer.from('k'), value: Buffer.alloc(300, 7), headers: {} },
  {
    name: 'a result with its headers and a traceparent',
    key: Buffer.from('4d9b1c1e-2f4a-4c1e-9a57-0f3c2e1d5b6a'),
    value: Buffer.alloc(120, 1),
    headers: {
      'streamscore-correlation-id': '4d9b1c1e-2f4a-4c1e-9a57-0f3c2e1d5b6a',
      'streamscore-model': 'digits',
      'streamscore-model-version': '2',
      traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01',
    },
  },
  {
    name: 'binary, repeated and non-ASCII headers, a null key',
    key: null,
    value: Buffer.from('v'),
    headers: {
      bin: Buffer.from([0, 255, 128, 1]),
      repeated: ['first', Buffer.from('second')],
      ключ: 'значение ✓',
      empty: '',
    },
  },
  {
    // The patch writes short ASCII strings itself (up to 128 characters) and leaves the rest to
    // Buffer#write: both sides of that bound, and a non-ASCII character at its last place.
    name: 'header strings at the short-string bound',
    key: Buffer.from('k'),
    value: Buffer.from('v'),
    headers: {
      ['k'.repeat(128)]: 'a'.repeat(128),
      ['k'.repeat(129)]: 'b'.repeat(129),
      latin1: `${'c'.repeat(127)}é`,
      astral: '𝔘𝔫𝔦𝔠𝔬𝔡𝔢',
    },
  },
  {
    name: 'a record over the encoder’s first 512 bytes',
    key: Buffer.alloc(1000, 2),
    value: Buffer.alloc(70_000, 3),
    headers: { big: 'x'.repeat(5000) },
  },
];

describe('kafkajs record encoding (patched)', () => {
  it('is the patched encoder (postinstall ran patch-package)', () => {
    expect(readFile('kafkajs/src/protocol/recordBatch/record/v0/index.js')).toContain(
      'streamscore patch',
    );
    expect(readFile('kafkajs/src/protocol/encoder.js')).toContain('streamscore patch');
  });

  it('writes varints as kafkajs 2.2.4 did, and its decoder reads them back', () => {
    for (const value of VARINT_VALUES) {
      const zigzag = (value << 1) ^ (value >> 31);
      const ours = new Encoder(1).writeVarInt(value).buffer;
      expect(ours.equals(referenceUVarInt(zigzag)), `varint ${value}`).toBe(true);
      expect(ours.length).toBe(Encoder.sizeOfVarInt(value));
      expect(new Decoder(ours).readVarInt()).toBe(value);
      const unsigned = new Encoder(1).writeUVarInt(value).buffer;
      expect(unsigned.equals(referenceUVarInt(value)), `uvarint ${value}`).toBe(true);
    }
    for (const value of VARLONG_VALUES) {
      const ours = new Encoder(1).writeVarLong(value).buffer;
      expect(ours.equals(referenceVarLong(value)), `varlong ${value}`).toBe(true);
      expect(ours.length).toBe(Encoder.sizeOfVarLong(value));
      expect(new Decoder(ours).readVarLong().toString()).toBe(String(value));
    }
  });

  it('sends no byte it did not write, though its buffers are not zeroed', async () => {
    // The patched Encoder takes its buffers from Buffer.allocUnsafe (kafkajs 2.2.4 zeroed each
    // one). A produce request encoded while every such buffer arrives full of 0xaa must be the
    // request encoded while every one arrives zeroed: any byte left unwritten would differ.
    const messages = Array.from({ length: 200 }, (_, i) => {
      const c = CASES[i % CASES.length]!;
      return { key: c.key, value: c.value, headers: c.headers, timestamp: 1_700_000_000_000 + i };
    });
    const encodeWith = async (fill: number) => {
      const allocUnsafe = Buffer.allocUnsafe;
      let calls = 0;
      Buffer.allocUnsafe = (size: number) => {
        calls++;
        return Buffer.alloc(size, fill);
      };
      try {
        const request = produceRequest({
          acks: -1,
          timeout: 30_000,
          topicData: [
            {
              topic: 'results',
              partitions: [
                { partition: 0, firstSequence: 0, messages: messages.slice(0, 150) },
                { partition: 3, firstSequence: 7, messages: messages.slice(150) },
              ],
            },
          ],
        });
        return { bytes: Buffer.from((await request.encode()).buffer), calls };
      } finally {
        Buffer.allocUnsafe = allocUnsafe;
      }
    };
    const dirty = await encodeWith(0xaa);
    const zeroed = await encodeWith(0);
    // Every record, batch and request encoder took its buffer there.
    expect(dirty.calls).toBeGreaterThan(messages.length);
    expect(dirty.bytes.length).toBeGreaterThan(100_000);
    expect(dirty.bytes.equals(zeroed.bytes)).toBe(true);
  });

  for (const c of CASES) {
    it(`writes the same bytes as kafkajs 2.2.4 did: ${c.name}`, () => {
      const record = { offsetDelta: 3, timestampDelta: 1500, ...c };
      const patched = Record(record).buffer;
      expect(patched.equals(unpatched(record))).toBe(true);

      const decoder = new Decoder(patched);
      // As kafkajs reads a batch: the length, then the record, with the batch's base offset and time.
      const length = decoder.readVarInt();
      expect(length).toBe(patched.length - decoder.offset);
      const back = decodeRecord(decoder, {
        firstOffset: '100',
        firstTimestamp: '1000',
        magicByte: 2,
      });
      expect(back.offset).toBe('103');
      expect(back.timestamp).toBe('2500');
      expect(back.key).toEqual(c.key);
      expect(back.value).toEqual(c.value);
      for (const [key, value] of Object.entries(c.headers)) {
        const expected = Array.isArray(value)
          ? value.map((v) => Buffer.from(v))
          : Buffer.from(value);
        expect(back.headers[key]).toEqual(expected);
      }
    });
  }
});
