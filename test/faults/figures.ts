/**
 * The figures every fault test prints and records: sent, answered, dead-lettered, duplicates,
 * lost. Each test appends its row to .cache/faults/figures.jsonl so README's "Guarantees" table
 * can be rebuilt from one run (`npx tsx scripts/fault-table.ts`).
 */
import { appendFileSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { REPO_ROOT } from '../model/helpers.js';

export interface FaultFigures {
  /** Request ids produced to the request topic (each once). */
  sent: number;
  /** Distinct request ids with at least one result. */
  answered: number;
  /** Distinct request ids (or source offsets, for records without a readable id) dead-lettered. */
  deadLettered: number;
  /** Results and dead letters beyond the first for the same request. */
  duplicates: number;
  /** Sent request ids with neither a result nor a dead letter. */
  lost: number;
}

export interface FaultOutcome {
  /** Request ids as produced. */
  sent: Iterable<string>;
  /** Request id of every result read (read_committed), duplicates included. */
  resultIds: Iterable<string>;
  /**
   * Identity of every dead letter read, duplicates included: the request id where the dead
   * letter carries one (correlation-id header), else `<topic>/<partition>/<offset>` of the source.
   */
  deadLetterIds?: Iterable<string>;
}

/** Counts the figures; ids that are neither sent nor expected count as answered/dead-lettered all the same. */
export function countFigures(outcome: FaultOutcome): FaultFigures {
  const sent = new Set(outcome.sent);
  const answered = new Set<string>();
  const deadLettered = new Set<string>();
  let duplicates = 0;
  for (const id of outcome.resultIds) {
    if (answered.has(id)) duplicates++;
    else answered.add(id);
  }
  for (const id of outcome.deadLetterIds ?? []) {
    if (deadLettered.has(id) || answered.has(id)) duplicates++;
    else deadLettered.add(id);
  }
  let lost = 0;
  for (const id of sent) if (!answered.has(id) && !deadLettered.has(id)) lost++;
  return {
    sent: sent.size,
    answered: answered.size,
    deadLettered: deadLettered.size,
    duplicates,
    lost,
  };
}

/** Prints the figures in one line and appends them, with the test's name, to figures.jsonl. */
export function reportFigures(
  test: string,
  figures: FaultFigures,
  extra: Record<string, unknown> = {},
): void {
  const line = `[fault] ${test}: sent ${figures.sent}, answered ${figures.answered}, dead-lettered ${figures.deadLettered}, duplicates ${figures.duplicates}, lost ${figures.lost}`;
  const details = Object.entries(extra)
    .map(([k, v]) => `${k} ${typeof v === 'string' ? v : JSON.stringify(v)}`)
    .join(', ');
  console.log(details ? `${line} (${details})` : line);
  const dir = path.join(REPO_ROOT, '.cache', 'faults');
  mkdirSync(dir, { recursive: true });
  appendFileSync(
    path.join(dir, 'figures.jsonl'),
    JSON.stringify({ test, ...figures, ...extra, at: new Date().toISOString() }) + '\n',
  );
}
