/**
 * Prints the fault tests' figures (`.cache/faults/figures.jsonl`, written by `npm test`) as the
 * Markdown table README's "Guarantees" section shows; the newest row per test wins.
 *
 *   npm test && npx tsx scripts/fault-table.ts
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

interface Row {
  test: string;
  sent: number;
  answered: number;
  deadLettered: number;
  duplicates: number;
  lost: number;
  at: string;
}

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const file = path.join(root, '.cache', 'faults', 'figures.jsonl');
const newest = new Map<string, Row>();
for (const line of readFileSync(file, 'utf8').split('\n')) {
  if (line.trim() === '') continue;
  const row = JSON.parse(line) as Row;
  newest.set(row.test, row);
}
const fmt = (n: number) => n.toLocaleString('en-US');
console.log('| fault test | sent | answered | dead-lettered | duplicates | lost |');
console.log('| --- | ---: | ---: | ---: | ---: | ---: |');
for (const row of [...newest.values()].sort((a, b) => a.test.localeCompare(b.test))) {
  console.log(
    `| ${row.test} | ${fmt(row.sent)} | ${fmt(row.answered)} | ${fmt(row.deadLettered)} | ${fmt(row.duplicates)} | ${fmt(row.lost)} |`,
  );
}
