import { describe, expect, it } from 'vitest';
import { duration, Progress } from '../../src/cli/progress.js';

describe('Progress without a terminal', () => {
  it('prints plain lines with this run’s rate and the ETA, and a last line on stop', () => {
    let now = 1_000_000;
    const lines: string[] = [];
    const progress = new Progress({
      label: 'score',
      unit: 'records',
      total: 10_000,
      start: 4_000, // a resumed run: these do not count towards the rate
      isTTY: false,
      write: (text) => lines.push(text),
      everyMs: 60_000,
      now: () => now,
    });
    now += 2_000;
    progress.update(5_000, '3 dead-lettered');
    expect(progress.line()).toBe(
      'score: 5,000/10,000 records (50.0 %), 500/s, ETA 10 s; 3 dead-lettered',
    );
    progress.stop();
    progress.stop();
    expect(lines).toEqual([
      'score: 5,000/10,000 records (50.0 %), 500/s, ETA 10 s; 3 dead-lettered\n',
    ]);
  });

  it('without a total: a count and a rate', () => {
    let now = 0;
    const progress = new Progress({
      label: 'produce',
      unit: 'requests',
      total: undefined,
      isTTY: false,
      write: () => undefined,
      now: () => now,
    });
    now = 4_000;
    progress.update(1_000);
    expect(progress.line()).toBe('produce: 1,000 requests, 250/s');
    progress.stop();
  });
});

it('duration', () => {
  expect([duration(4.4), duration(125), duration(7_380), duration(Infinity)]).toEqual([
    '4 s',
    '2 min 5 s',
    '2 h 3 min',
    '?',
  ]);
});
