/**
 * The end of every fault test: read what the workers wrote (read_committed), count, print and
 * record the figures, and assert the delivery mode's guarantee.
 */
import { expect } from 'vitest';
import { countFigures, reportFigures, type FaultFigures } from '../figures.js';
import { readOutcome, uncommittedRecords, type FaultTopics } from './streams.js';
import type { DeliveryMode } from './worker-process.js';

export interface RunFigures extends FaultFigures {
  /** Requests the group had not committed past once its last worker stopped (drained). */
  uncommitted: number;
}

/**
 * Once every worker stopped: reads results and dead letters to their end, counts, prints and
 * records the figures, plus how far the group's committed offsets lag behind the requests.
 */
export async function collectFigures(
  test: string,
  brokers: string[],
  groupId: string,
  topics: FaultTopics,
  sent: readonly string[],
  extra: Record<string, unknown> = {},
): Promise<RunFigures> {
  const outcome = await readOutcome(brokers, topics);
  const figures = countFigures({ sent, ...outcome });
  const uncommitted = await uncommittedRecords(brokers, groupId, topics.requests);
  reportFigures(test, figures, {
    ...extra,
    uncommitted,
    ...(outcome.complete ? {} : { readComplete: false }),
  });
  expect(outcome.complete, 'results and dead letters were read to their end').toBe(true);
  return { ...figures, uncommitted };
}

/**
 * at-least-once: nothing lost (duplicates are reported, not asserted). exactly-once, read
 * read_committed: nothing lost and nothing twice. In both, a valid request gets a result, not a
 * dead letter, and a worker that stopped cleanly after answering everything has committed it
 * all (else the next worker of the group answers it again).
 */
export function expectGuarantee(mode: DeliveryMode, figures: RunFigures, sent: number): void {
  expect(figures.sent).toBe(sent);
  expect(figures.lost, 'requests with neither a result nor a dead letter').toBe(0);
  expect(figures.deadLettered, 'valid requests dead-lettered').toBe(0);
  expect(figures.uncommitted, 'requests answered but not committed after a clean stop').toBe(0);
  if (mode === 'exactly-once') {
    expect(figures.duplicates, 'results read twice with read_committed').toBe(0);
  }
}
