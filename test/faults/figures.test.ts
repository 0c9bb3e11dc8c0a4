import { describe, expect, it } from 'vitest';
import { countFigures } from './figures.js';

describe('countFigures', () => {
  it('counts answered, dead-lettered, duplicates and lost against what was sent', () => {
    expect(
      countFigures({
        sent: ['a', 'b', 'c', 'd', 'e'],
        resultIds: ['a', 'b', 'a', 'b', 'b'],
        deadLetterIds: ['c', 'c', 'a'],
      }),
    ).toEqual({ sent: 5, answered: 2, deadLettered: 1, duplicates: 5, lost: 2 });
  });
});
