import { execFileSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { CanaryRouter, keyHash32, routePoint } from '../../src/model/canary.js';
import { REPO_ROOT } from './helpers.js';

const bytes = (text: string) => Buffer.from(text, 'utf8');

/** Computed once in a separate process; a seed or any per-process state would change them. */
const GOLDEN: [string, number][] = [
  ['', 2872998923],
  ['a', 444641715],
  ['key-0', 4105692849],
  ['user-42', 2083131798],
  ['k-499', 1784861729],
];

describe('canary key-hash router', () => {
  it('hashes keys to fixed values (FNV-1a 32 + fmix32), the same in every process', () => {
    for (const [key, hash] of GOLDEN) expect(keyHash32(bytes(key))).toBe(hash);
    // And in a fresh Node process right now.
    const out = execFileSync(
      process.execPath,
      [
        '--import',
        'tsx',
        '--input-type=module',
        '-e',
        `import { keyHash32 } from './src/model/canary.ts';
         console.log(JSON.stringify(${JSON.stringify(GOLDEN.map(([k]) => k))}.map((k) => keyHash32(Buffer.from(k)))));`,
      ],
      { cwd: REPO_ROOT, encoding: 'utf8' },
    );
    expect(JSON.parse(out.trim())).toEqual(GOLDEN.map(([, h]) => h));
  });

  it('routes a key the same way every time, and a null key by the request id', () => {
    const router = new CanaryRouter(0.5);
    for (let i = 0; i < 1000; i++) {
      const key = bytes(`key-${i}`);
      const first = router.route(key, `a-${i}`);
      // Same key, other request ids, a copy of the buffer: same route.
      expect(router.route(Buffer.from(key), `b-${i}`)).toBe(first);
      expect(router.route(key, `c-${i}`)).toBe(first);
    }
    expect(routePoint(null, 'req-1')).toBe(routePoint(bytes('req-1'), 'other'));
    expect(routePoint(null, 'req-1')).toBeGreaterThanOrEqual(0);
    expect(routePoint(null, 'req-1')).toBeLessThan(1);
  });

  it('sends 10 % of 100,000 random keys to the canary, within ±2 %', () => {
    const router = new CanaryRouter(0.1);
    let canary = 0;
    const n = 100_000;
    for (let i = 0; i < n; i++) if (router.route(bytes(randomUUID()), 'id') === 'canary') canary++;
    const share = canary / n;
    console.log(`canary share over ${n} random keys at fraction 0.1: ${share}`);
    expect(Math.abs(share - 0.1)).toBeLessThanOrEqual(0.02);
    // Sequential keys too (the worst case for a weak hash).
    let sequential = 0;
    for (let i = 0; i < n; i++)
      if (router.route(bytes(`key-${i}`), 'id') === 'canary') sequential++;
    expect(Math.abs(sequential / n - 0.1)).toBeLessThanOrEqual(0.02);
  });

  it('fraction 0 sends nothing to the canary, 1 everything; out of range is refused', () => {
    const keys = Array.from({ length: 1000 }, (_, i) => bytes(`k${i}`));
    expect(keys.every((k) => new CanaryRouter(0).route(k, 'x') === 'stable')).toBe(true);
    expect(keys.every((k) => new CanaryRouter(1).route(k, 'x') === 'canary')).toBe(true);
    expect(() => new CanaryRouter(1.5)).toThrow(RangeError);
    expect(() => new CanaryRouter(Number.NaN)).toThrow(RangeError);
  });
});
