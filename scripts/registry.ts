/**
 * A local Confluent-compatible Schema Registry (Apicurio Registry) for the demo and for development.
 *
 *   npm run registry -- fetch               download and unpack the registry only (CI's install step)
 *   npm run registry -- start [--port 8081] run a registry in the foreground until Ctrl-C
 *
 * `start` prints the Confluent API's base URL, e.g. http://127.0.0.1:8081/apis/ccompat/v7, which
 * is what Schema Registry clients (kafkajs's, confluent-kafka's) take as their URL.
 */
import { Command, InvalidArgumentError } from 'commander';
import {
  ensureRegistryDistribution,
  findJava21,
  startLocalRegistry,
} from '../src/registry/local-registry.js';

const log = (msg: string): void => console.error(`[registry] ${msg}`);

function positiveInt(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n <= 0) throw new InvalidArgumentError('expected a positive integer');
  return n;
}

const program = new Command('registry').description(
  'a Confluent-compatible Schema Registry (Apicurio Registry, in memory) on 127.0.0.1',
);

program
  .command('fetch')
  .description(
    'download Apicurio Registry with Maven into .cache/apicurio (skipped when already complete) and check for Java 21+',
  )
  .action(async () => {
    const dir = await ensureRegistryDistribution({ log });
    // Fails here, at install time, rather than in the first test that needs a registry.
    const { java, major } = await findJava21();
    log(`Java ${major}: ${java}`);
    console.log(dir);
  });

program
  .command('start')
  .description('start a registry and keep it running until SIGINT or SIGTERM')
  .option('--port <port>', 'HTTP port (default: a free port)', positiveInt)
  .option('--heap-mb <mb>', 'JVM max heap in MiB', positiveInt, 384)
  .action(async (opts: { port?: number; heapMb: number }) => {
    // Wait for the signal from the start: one arriving while the JVM boots still stops it cleanly.
    const signalled = new Promise<NodeJS.Signals>((resolve) => {
      process.once('SIGINT', resolve);
      process.once('SIGTERM', resolve);
    });
    const registry = await startLocalRegistry({ ...opts, log });
    console.log(registry.url);
    log(`logs: ${registry.logFile}; Ctrl-C to stop`);
    const reason = await Promise.race([signalled, registry.exited.then((code) => ({ code }))]);
    if (typeof reason === 'object') {
      log(`registry exited by itself (code ${reason.code}); see ${registry.logFile}`);
      process.exitCode = 1;
      return;
    }
    log(`${reason}: stopping the registry`);
    await registry.stop();
    log(`stopped (exit code ${await registry.exited})`);
  });

try {
  await program.parseAsync();
} catch (err) {
  log(err instanceof Error ? err.message : String(err));
  process.exitCode = 1;
}
