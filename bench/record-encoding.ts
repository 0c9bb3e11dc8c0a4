/**
 * `npx tsx bench/record-encoding.ts`: what kafkajs's record encoder costs per result record, with
 * the worker's three result headers and with a fourth (`traceparent`, when tracing is on) as a
 * string or as bytes (a view into one buffer, as the worker writes it since a3c6c30), as patched
 * by patches/kafkajs+2.2.4.patch (the module `npm ci` installs). The header objects are built
 * beforehand, so only the encoder is timed; making the value (a 55-byte string from bytes, or a
 * view of them) is timed apart. Rounds alternate the variants; medians are kept.
 *
 * Also the record batch's CRC-32C, side by side on the same batch of encoded result records (128,
 * four headers, as one produce request's partition holds): kafkajs's own byte loop against the
 * crc-32 function the patch has kafkajs call.
 *
 * And whole record batches (128 result records with four headers, encoded and checksummed as the
 * producer does), side by side: with the patch's unzeroed buffers, and with every buffer zeroed as
 * kafkajs 2.2.4 allocated them (Buffer.allocUnsafe swapped for a zeroing allocation in those rounds).
 *
 * Writes bench/results/record-encoding-latest.json.
 */
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const require = createRequire(import.meta.url);
const encodeRecord = require('kafkajs/src/protocol/recordBatch/record/v0') as (r: {
  offsetDelta: number;
  timestampDelta: number;
  key: Buffer;
  value: Buffer;
  headers: Record<string, string | Buffer>;
}) => unknown;

const { RecordBatch } = require('kafkajs/src/protocol/recordBatch/v0') as {
  RecordBatch(b: { records: unknown[]; lastOffsetDelta: number }): Promise<{ buffer: Buffer }>;
};
const patchedChecksum = require('kafkajs/src/protocol/recordBatch/crc32C') as (b: Buffer) => number;
const kafkajsChecksum = require('kafkajs/src/protocol/recordBatch/crc32C/crc32C') as (
  b: Buffer,
) => number;

const RECORDS = 300_000;
const BATCH_RECORDS = 128;
const ROUNDS = 5;
const VARIANTS = 1000;

const value = randomBytes(120);
const key = Buffer.from('4d9b1c1e-2f4a-4c1e-9a57-0f3c2e1d5b6a');
const result = (i: number): Record<string, string> => ({
  'streamscore-correlation-id': `4d9b1c1e-2f4a-4c1e-9a57-${String(i).padStart(12, '0')}`,
  'streamscore-model': 'tabular',
  'streamscore-model-version': '1',
});
const threeHeaders = Array.from({ length: VARIANTS }, (_, i) => result(i));
const fourHeaders = Array.from({ length: VARIANTS }, (_, i) => ({
  ...result(i),
  traceparent: `00-${randomBytes(16).toString('hex')}-${randomBytes(8).toString('hex')}-01`,
}));

const TRACEPARENT = 55;
const traceparentBytes = Buffer.concat(
  fourHeaders.map((h) => Buffer.from(h.traceparent, 'latin1')),
);
const fourHeadersBytes = fourHeaders.map((h, i) => ({
  ...h,
  traceparent: traceparentBytes.subarray(i * TRACEPARENT, (i + 1) * TRACEPARENT),
}));

/** µs to make each traceparent value from its bytes: a string (latin1) or a view. */
function usPerValue(asString: boolean): number {
  let keep = 0;
  const start = process.hrtime.bigint();
  for (let i = 0; i < RECORDS; i++) {
    const at = (i % VARIANTS) * TRACEPARENT;
    const made = asString
      ? traceparentBytes.toString('latin1', at, at + TRACEPARENT)
      : traceparentBytes.subarray(at, at + TRACEPARENT);
    keep += made.length;
  }
  const us = Number(process.hrtime.bigint() - start) / 1000 / RECORDS;
  if (keep !== RECORDS * TRACEPARENT) throw new Error('unexpected length');
  return us;
}

function usPerRecord(headers: Record<string, string | Buffer>[]): number {
  const start = process.hrtime.bigint();
  for (let i = 0; i < RECORDS; i++) {
    encodeRecord({
      offsetDelta: i,
      timestampDelta: i % 50,
      key,
      value,
      headers: headers[i % VARIANTS]!,
    });
  }
  return Number(process.hrtime.bigint() - start) / 1000 / RECORDS;
}

/** µs per record for checksumming `batch` (BATCH_RECORDS records) with `checksum`. */
function checksumUsPerRecord(checksum: (b: Buffer) => number, batch: Buffer): number {
  const batches = Math.ceil(RECORDS / BATCH_RECORDS);
  let sink = 0;
  const start = process.hrtime.bigint();
  for (let i = 0; i < batches; i++) sink ^= checksum(batch);
  const us = Number(process.hrtime.bigint() - start) / 1000 / (batches * BATCH_RECORDS);
  if (sink === 0.5) throw new Error('unreachable');
  return us;
}

/**
 * µs per record to encode record batches of BATCH_RECORDS result records (four headers, the
 * traceparent as bytes) and checksum them, as the producer does for each partition; `zeroed`: with
 * every Encoder buffer zeroed, as kafkajs 2.2.4 allocated them.
 */
async function batchUsPerRecord(zeroed: boolean): Promise<number> {
  const batches = Math.ceil(RECORDS / BATCH_RECORDS);
  const allocUnsafe = Buffer.allocUnsafe;
  if (zeroed) Buffer.allocUnsafe = (size: number) => Buffer.alloc(size);
  try {
    let bytes = 0;
    const start = process.hrtime.bigint();
    for (let b = 0; b < batches; b++) {
      const records = [];
      for (let i = 0; i < BATCH_RECORDS; i++) {
        records.push(
          encodeRecord({
            offsetDelta: i,
            timestampDelta: 0,
            key,
            value,
            headers: fourHeadersBytes[(b * BATCH_RECORDS + i) % VARIANTS]!,
          }),
        );
      }
      bytes += (await RecordBatch({ records, lastOffsetDelta: BATCH_RECORDS - 1 })).buffer.length;
    }
    const us = Number(process.hrtime.bigint() - start) / 1000 / (batches * BATCH_RECORDS);
    if (bytes === 0) throw new Error('nothing encoded');
    return us;
  } finally {
    Buffer.allocUnsafe = allocUnsafe;
  }
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const three: number[] = [];
const four: number[] = [];
const fourBytes: number[] = [];
const makeString: number[] = [];
const makeView: number[] = [];
const batchBody = Buffer.concat(
  Array.from(
    { length: BATCH_RECORDS },
    (_, i) =>
      (
        encodeRecord({
          offsetDelta: i,
          timestampDelta: 0,
          key,
          value,
          headers: fourHeadersBytes[i]!,
        }) as { buffer: Buffer }
      ).buffer,
  ),
);
if (patchedChecksum(batchBody) !== kafkajsChecksum(batchBody))
  throw new Error('the patched checksum differs from kafkajs');
const crcKafkajs: number[] = [];
const crcPatched: number[] = [];
const batchPatched: number[] = [];
const batchZeroed: number[] = [];
checksumUsPerRecord(kafkajsChecksum, batchBody); // warm-up
checksumUsPerRecord(patchedChecksum, batchBody);
usPerRecord(threeHeaders); // warm-up
usPerRecord(fourHeaders);
usPerRecord(fourHeadersBytes);
usPerValue(true);
usPerValue(false);
await batchUsPerRecord(false);
await batchUsPerRecord(true);
for (let round = 0; round < ROUNDS; round++) {
  three.push(usPerRecord(threeHeaders));
  four.push(usPerRecord(fourHeaders));
  fourBytes.push(usPerRecord(fourHeadersBytes));
  makeString.push(usPerValue(true));
  makeView.push(usPerValue(false));
  crcKafkajs.push(checksumUsPerRecord(kafkajsChecksum, batchBody));
  crcPatched.push(checksumUsPerRecord(patchedChecksum, batchBody));
  // Alternated within each round, in both orders.
  if (round % 2 === 0) {
    batchPatched.push(await batchUsPerRecord(false));
    batchZeroed.push(await batchUsPerRecord(true));
  } else {
    batchZeroed.push(await batchUsPerRecord(true));
    batchPatched.push(await batchUsPerRecord(false));
  }
}
const us = (x: number): number => Number(x.toFixed(3));
const report = {
  date: new Date().toISOString(),
  node: process.version,
  cpu: os.cpus()[0]?.model ?? 'unknown',
  records_per_round: RECORDS,
  rounds: ROUNDS,
  us_per_record_three_headers: us(median(three)),
  us_per_record_four_headers: us(median(four)),
  us_per_record_four_headers_traceparent_bytes: us(median(fourBytes)),
  us_for_traceparent: us(median(four) - median(three)),
  us_for_traceparent_bytes: us(median(fourBytes) - median(three)),
  us_to_make_traceparent_string: us(median(makeString)),
  us_to_make_traceparent_view: us(median(makeView)),
  checksum: {
    batch_records: BATCH_RECORDS,
    bytes_per_record: Math.round(batchBody.length / BATCH_RECORDS),
    us_per_record_kafkajs_loop: us(median(crcKafkajs)),
    us_per_record_patched: us(median(crcPatched)),
    speed_up: Number((median(crcKafkajs) / median(crcPatched)).toFixed(2)),
  },
  record_batch: {
    batch_records: BATCH_RECORDS,
    us_per_record_buffers_zeroed: us(median(batchZeroed)),
    us_per_record_patched: us(median(batchPatched)),
    speed_up: Number((median(batchZeroed) / median(batchPatched)).toFixed(2)),
  },
  rounds_us: {
    three_headers: three.map(us),
    four_headers: four.map(us),
    four_headers_traceparent_bytes: fourBytes.map(us),
    make_string: makeString.map(us),
    make_view: makeView.map(us),
    checksum_kafkajs_loop: crcKafkajs.map(us),
    checksum_patched: crcPatched.map(us),
    record_batch_zeroed: batchZeroed.map(us),
    record_batch_patched: batchPatched.map(us),
  },
};
console.log(
  `kafkajs record encoder (patched), µs per result record, median of ${ROUNDS} × ${RECORDS}: ` +
    `3 headers ${report.us_per_record_three_headers}, 4 headers ${report.us_per_record_four_headers} ` +
    `(traceparent as a string +${report.us_for_traceparent}; as bytes +${report.us_for_traceparent_bytes}); ` +
    `making the value: string ${report.us_to_make_traceparent_string}, view ${report.us_to_make_traceparent_view}`,
);
console.log(
  `record batch CRC-32C, µs per record (${report.checksum.bytes_per_record} bytes): kafkajs's loop ` +
    `${report.checksum.us_per_record_kafkajs_loop}, patched (crc-32) ${report.checksum.us_per_record_patched}: ` +
    `${report.checksum.speed_up}× faster`,
);
console.log(
  `record batches of ${BATCH_RECORDS} (encoded and checksummed), µs per record: buffers zeroed as ` +
    `kafkajs 2.2.4 allocated them ${report.record_batch.us_per_record_buffers_zeroed}, patched ` +
    `${report.record_batch.us_per_record_patched}: ${report.record_batch.speed_up}× faster`,
);
const out = path.resolve(
  path.dirname(fileURLToPath(import.meta.url)),
  'results',
  'record-encoding-latest.json',
);
writeFileSync(out, `${JSON.stringify(report, null, 2)}\n`);
console.log(`wrote ${path.relative(process.cwd(), out)}`);
