import { defineConfig } from 'vitest/config';

// Two projects: fast unit tests that need nothing, and integration tests that share one real
// Kafka broker started once per run by the global setup. The machines have two cores, so files
// run one at a time in the integration project (they share the broker and compete for CPU).
export default defineConfig({
  test: {
    projects: [
      {
        test: {
          name: 'unit',
          include: ['test/**/*.test.ts'],
          exclude: ['test/integration/**', 'test/faults/**'],
          testTimeout: 30_000,
        },
      },
      {
        test: {
          name: 'integration',
          // Fault tests (test/faults/) need the same broker: crashes, restarts and rebalances.
          include: ['test/integration/**/*.test.ts', 'test/faults/**/*.test.ts'],
          globalSetup: ['test/integration/global-setup.ts'],
          fileParallelism: false,
          testTimeout: 180_000,
          hookTimeout: 180_000,
        },
      },
    ],
  },
});
