import { describe, expect, it } from 'vitest';
import { median, medianInterval } from '../../bench/median-interval.js';

describe('medianInterval', () => {
  it('has no 95 % interval from five runs or fewer (no pair of runs reaches it)', () => {
    expect(medianInterval([3.2, 5.6, 8.8, 9.4, 10.8])).toBeNull();
  });

  it('spans all of six runs at 95 % (coverage 1 − 2/64)', () => {
    const interval = medianInterval([12.6, 7.1, 8.3, 8.4, 10.3, 12.4]);
    expect(interval).toEqual({ low: 7.1, high: 12.6, confidence: 1 - 2 / 64 });
  });

  it('narrows to the 4th smallest and 4th largest of fifteen runs', () => {
    const runs = [
      6.0, 6.2, 7.1, 7.1, 8.3, 8.4, 10.3, 10.5, 10.7, 11.5, 11.7, 12.4, 12.6, 13.6, 14.0,
    ];
    const interval = medianInterval(runs)!;
    expect([interval.low, interval.high]).toEqual([7.1, 12.4]);
    // P(Bin(15, ½) ≤ 3) = (1 + 15 + 105 + 455) / 32768
    expect(interval.confidence).toBeCloseTo(1 - (2 * 576) / 32768, 12);
  });

  it('takes a lower confidence when asked, and so a narrower interval', () => {
    const runs = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10];
    expect(medianInterval(runs, 0.95)).toMatchObject({ low: 2, high: 9 });
    expect(medianInterval(runs, 0.75)).toMatchObject({ low: 3, high: 8 });
  });

  it('has a median: the middle run, or the mean of the two middle ones', () => {
    expect(median([12.6, 7.1, 8.3])).toBe(8.3);
    expect(median([12.6, 7.1, 8.3, 10.3])).toBeCloseTo(9.3, 12);
    expect(median([])).toBeNaN();
  });
});
