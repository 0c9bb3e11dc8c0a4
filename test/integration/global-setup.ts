/**
 * Vitest global setup for the integration project: one Kafka broker for the whole run.
 *
 * STREAMSCORE_TEST_BROKERS=host:port[,host:port] points the tests at a broker you run yourself;
 * otherwise a local single-node broker (src/kafka/local-broker.ts) starts here and stops in
 * teardown. Tests read the list with `inject('kafkaBrokers')`.
 */
import type { TestProject } from 'vitest/node';
import { startLocalBroker } from '../../src/kafka/local-broker.js';

declare module 'vitest' {
  export interface ProvidedContext {
    kafkaBrokers: string[];
  }
}

const log = (msg: string): void => console.error(`[kafka] ${msg}`);

export default async function setup(
  project: TestProject,
): Promise<(() => Promise<void>) | undefined> {
  const external = process.env['STREAMSCORE_TEST_BROKERS'];
  if (external !== undefined && external.trim() !== '') {
    const brokers = external
      .split(',')
      .map((broker) => broker.trim())
      .filter((broker) => broker !== '');
    log(`using STREAMSCORE_TEST_BROKERS=${brokers.join(',')}`);
    project.provide('kafkaBrokers', brokers);
    return undefined;
  }

  const broker = await startLocalBroker({ log });
  project.provide('kafkaBrokers', broker.brokers);
  return async () => {
    await broker.stop();
  };
}
