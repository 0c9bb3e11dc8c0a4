import { createRequire } from 'node:module';
import { describe, expect, it } from 'vitest';

/**
 * patches/kafkajs+2.2.4.patch rewrites how kafkajs encodes one record (headers inline, one
 * encoder of the record's size) because the original allocated 512 zeroed bytes per header. The
 * bytes on the wire must not change: these compare the patched encoder with the original
 * composition, rebuilt here from kafkajs's own Encoder and Header modules, and read the result
 * back with kafkajs's record decoder.
 */
const require = createRequire(import.meta.url);
type Headers = Record<string, string | Buffer | (string | Buffer)[]>;
interface EncoderInstance {
  buffer: Buffer;
  writeVarInt(v: number): EncoderInstance;
  writeInt8(v: number): EncoderInstance;
  writeVarLong(v: number): EncoderInstance;
  writeVarIntBytes(v: Buffer | string | null): EncoderInstance;
  writeVarIntArray(v: EncoderInstance[]): EncoderInstance;
}
const Encoder = require('kafkajs/src/protocol/encoder') as {
  new (): EncoderInstance;
  sizeOfVarInt(v: number): number;
  sizeOfVarLong(v: number): number;
  sizeOfVarIntBytes(v: Buffer | string | null): number;
};
const Decoder = require('kafkajs/src/protocol/decoder') as new (buffer: Buffer) => {
  offset: number;
  readVarInt(): number;
};
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
const readFile = (path: string) =>
  (require('node:fs') as typeof import('node:fs')).readFileSync(require.resolve(path), 'utf8');

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
