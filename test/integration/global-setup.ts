/**
 * Vitest global setup for the integration project: one Kafka broker and one Schema Registry for
 * the whole run.
 *
 * STREAMSCORE_TEST_BROKERS=host:port[,host:port] points the tests at a broker you run yourself;
 * otherwise a local single-node broker (src/kafka/local-broker.ts) starts here and stops in
 * teardown. Tests read the list with `inject('kafkaBrokers')`.
 *
 * STREAMSCORE_TEST_REGISTRY=<url> points them at a Confluent-compatible Schema Registry you run
 * yourself (the Confluent API's base URL, e.g. http://127.0.0.1:8081/apis/ccompat/v7 for
 * Apicurio, http://127.0.0.1:8081 for Confluent's); otherwise a local Apicurio Registry
 * (src/registry/local-registry.ts) starts here, next to the broker. Tests read the URL with
 * `inject('registryUrl')`.
 *
 * The Python reference peer's venv (.cache/pyenv) is made here too when missing.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import type { TestProject } from 'vitest/node';
import { startLocalBroker } from '../../src/kafka/local-broker.js';
import { startLocalRegistry } from '../../src/registry/local-registry.js';

declare module 'vitest' {
  export interface ProvidedContext {
    kafkaBrokers: string[];
    /** A Confluent-compatible Schema Registry's base URL, without a trailing slash. */
    registryUrl: string;
  }
}

const kafkaLog = (msg: string): void => console.error(`[kafka] ${msg}`);
const registryLog = (msg: string): void => console.error(`[registry] ${msg}`);

type Stop = () => Promise<void>;

async function provideBrokers(project: TestProject): Promise<Stop | undefined> {
  const external = process.env['STREAMSCORE_TEST_BROKERS'];
  if (external !== undefined && external.trim() !== '') {
    const brokers = external
      .split(',')
      .map((broker) => broker.trim())
      .filter((broker) => broker !== '');
    kafkaLog(`using STREAMSCORE_TEST_BROKERS=${brokers.join(',')}`);
    project.provide('kafkaBrokers', brokers);
    return undefined;
  }
  const broker = await startLocalBroker({ log: kafkaLog });
  project.provide('kafkaBrokers', broker.brokers);
  return broker.stop;
}

async function provideRegistry(project: TestProject): Promise<Stop | undefined> {
  const external = process.env['STREAMSCORE_TEST_REGISTRY'];
  if (external !== undefined && external.trim() !== '') {
    const url = external.trim().replace(/\/+$/, '');
    registryLog(`using STREAMSCORE_TEST_REGISTRY=${url}`);
    project.provide('registryUrl', url);
    return undefined;
  }
  const registry = await startLocalRegistry({ log: registryLog });
  project.provide('registryUrl', registry.url);
  return registry.stop;
}

/**
 * The Python reference peer's venv (scripts/python-peer.sh: idempotent, instant when built), so
 * `npm test` on a fresh machine needs no step of its own. Never fails the setup: the peer's tests
 * say what is missing.
 */
async function preparePythonPeer(): Promise<undefined> {
  try {
    await promisify(execFile)('bash', ['scripts/python-peer.sh'], { timeout: 300_000 });
  } catch (err) {
    console.error(`[python-peer] scripts/python-peer.sh failed: ${(err as Error).message}`);
  }
  return undefined;
}

export default async function setup(project: TestProject): Promise<Stop | undefined> {
  // Side by side, so the run waits only for the slowest.
  const started = await Promise.allSettled([
    provideBrokers(project),
    provideRegistry(project),
    preparePythonPeer(),
  ]);
  const stops = started.flatMap((result) =>
    result.status === 'fulfilled' && result.value !== undefined ? [result.value] : [],
  );
  const stopAll = async (): Promise<void> => {
    await Promise.all(stops.map((stop) => stop()));
  };
  const failed = started.find((result) => result.status === 'rejected');
  if (failed !== undefined) {
    await stopAll(); // the one that did start must not outlive a run that cannot happen
    throw failed.reason;
  }
  return stops.length === 0 ? undefined : stopAll;
}
