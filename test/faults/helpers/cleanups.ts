/**
 * The fault tests' afterEach: SIGKILL whatever workers a test left running, then undo what the
 * test set up (clients, watchers), last pushed first, whether the test passed or failed.
 */
import { afterEach } from 'vitest';
import { killWorkers } from './worker-process.js';

export type Cleanup = () => Promise<void>;

/**
 * Registers the afterEach and returns the list a test pushes its cleanups on. `last`, if given,
 * runs after them (e.g. stopping a broker the test started).
 */
export function useCleanups(last?: Cleanup): Cleanup[] {
  const cleanups: Cleanup[] = [];
  afterEach(async () => {
    await killWorkers();
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
    await last?.();
  });
  return cleanups;
}
