/**
 * `npx tsx bench/record-encoding.ts`: what kafkajs's record encoder costs per result record, with
 * the worker's three result headers and with a fourth (`traceparent`, when tracing is on), as
 * patched by patches/kafkajs+2.2.4.patch (the module `npm ci` installs). The header objects are
 * built beforehand, so only the encoder is timed. Rounds alternate the two; medians are kept.
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
  headers: Record<string, string>;
}) => unknown;

const RECORDS = 300_000;
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

function usPerRecord(headers: Record<string, string>[]): number {
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

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const three: number[] = [];
const four: number[] = [];
usPerRecord(threeHeaders); // warm-up
usPerRecord(fourHeaders);
for (let round = 0; round < ROUNDS; round++) {
  three.push(usPerRecord(threeHeaders));
  four.push(usPerRecord(fourHeaders));
}
const report = {
  date: new Date().toISOString(),
  node: process.version,
  cpu: os.cpus()[0]?.model ?? 'unknown',
  records_per_round: RECORDS,
  rounds: ROUNDS,
  us_per_record_three_headers: Number(median(three).toFixed(2)),
  us_per_record_four_headers: Number(median(four).toFixed(2)),
  us_for_traceparent: Number((median(four) - median(three)).toFixed(2)),
  rounds_us: {
    three_headers: three.map((x) => Number(x.toFixed(2))),
    four_headers: four.map((x) => Number(x.toFixed(2))),
  },
};
console.log(
  `kafkajs record encoder (patched), µs per result record, median of ${ROUNDS} × ${RECORDS}: ` +
    `3 headers ${report.us_per_record_three_headers}, 4 headers ${report.us_per_record_four_headers} ` +
    `(traceparent +${report.us_for_traceparent})`,
);
const out = path.resolve(
  path.dirname(fileURLToPath(import.meta.url)),
  'results',
  'record-encoding-latest.json',
);
writeFileSync(out, `${JSON.stringify(report, null, 2)}\n`);
console.log(`wrote ${path.relative(process.cwd(), out)}`);
