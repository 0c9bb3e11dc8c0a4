/**
 * Write synthetic payments (schemas/examples/payment.avsc), one JSON object per line, no label:
 * the sample data/payments/payments.jsonl for users and the CLI.
 *
 *   npx tsx scripts/generate-payments.ts [--count 1000] [--seed 20250303] [--out data/payments/payments.jsonl]
 *
 * Same count and seed, same file. The default seed is neither the training nor the held-out
 * seed of models/fraud/1.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { PAYMENTS_SAMPLE_SEED, generatePayments } from '../src/model/payments-data.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

const { values: args } = parseArgs({
  options: {
    count: { type: 'string', default: '1000' },
    seed: { type: 'string', default: String(PAYMENTS_SAMPLE_SEED) },
    out: { type: 'string', default: path.join(ROOT, 'data', 'payments', 'payments.jsonl') },
  },
});
const count = Number(args.count);
const seed = Number(args.seed);
if (!Number.isInteger(count) || count < 0) throw new Error(`--count ${args.count}: not a count`);
if (!Number.isInteger(seed)) throw new Error(`--seed ${args.seed}: not an integer`);

const payments = generatePayments(count, seed);
const outFile = path.resolve(args.out);
await mkdir(path.dirname(outFile), { recursive: true });
await writeFile(outFile, payments.map(({ payment }) => JSON.stringify(payment) + '\n').join(''));
const fraud = payments.filter((p) => p.fraud).length;
console.log(
  `wrote ${count} payments (seed ${seed}; ${fraud} fraud by the hidden rule, not in the file) to ${path.relative(ROOT, outFile)}`,
);
