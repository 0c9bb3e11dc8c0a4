/**
 * A confidence interval for the median of a few benchmark runs, with no assumption about how the
 * runs scatter (the sign test's order statistics): the true median lies between the k-th smallest
 * and the k-th largest of n runs with probability 1 − 2·P(Binomial(n, ½) < k). The largest k (the
 * narrowest interval) that still reaches the confidence asked for is chosen. With fewer than 6 runs
 * no pair of runs reaches 95 %: the interval is then null, and that is the answer (run more).
 */
export interface MedianInterval {
  low: number;
  high: number;
  /** The interval's actual coverage (≥ the confidence asked for). */
  confidence: number;
}

/** The middle value, or the mean of the two middle ones for an even count; NaN for none. */
export function median(values: readonly number[]): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

/** P(Binomial(n, ½) ≤ k). */
function binomialHalfCdf(n: number, k: number): number {
  let term = 0.5 ** n; // C(n, 0) / 2^n
  let sum = 0;
  for (let i = 0; i <= k; i++) {
    sum += term;
    term = (term * (n - i)) / (i + 1);
  }
  return sum;
}

export function medianInterval(
  values: readonly number[],
  confidence = 0.95,
): MedianInterval | null {
  const sorted = [...values].sort((a, b) => a - b);
  const n = sorted.length;
  let best: MedianInterval | null = null;
  // k-th smallest and k-th largest, k = 1 outermost; move inward while the coverage holds.
  for (let k = 1; 2 * k <= n; k++) {
    const coverage = 1 - 2 * binomialHalfCdf(n, k - 1);
    if (coverage < confidence) break;
    best = { low: sorted[k - 1]!, high: sorted[n - k]!, confidence: coverage };
  }
  return best;
}
