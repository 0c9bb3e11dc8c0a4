/**
 * A local Kafka broker for the demo and for development.
 *
 *   npm run kafka -- fetch               download the broker's jars only (CI's install step)
 *   npm run kafka -- start [--port 9092] run a broker in the foreground until Ctrl-C
 */
import { Command, InvalidArgumentError } from 'commander';
import { ensureKafkaJars, startLocalBroker } from '../src/kafka/local-broker.js';

const log = (msg: string): void => console.error(`[kafka] ${msg}`);

function positiveInt(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n <= 0) throw new InvalidArgumentError('expected a positive integer');
  return n;
}

const program = new Command('kafka').description(
  'a single-node Apache Kafka broker (KRaft) on 127.0.0.1',
);

program
  .command('fetch')
  .description(
    'download the Kafka jars with Maven into .cache/kafka (skipped when already complete)',
  )
  .action(async () => {
    console.log(await ensureKafkaJars({ log }));
  });

program
  .command('start')
  .description('start a broker and keep it running until SIGINT or SIGTERM')
  .option('--port <port>', 'PLAINTEXT port (default: a free port)', positiveInt)
  .option('--controller-port <port>', 'KRaft controller port (default: a free port)', positiveInt)
  .option('--heap-mb <mb>', 'JVM max heap in MiB', positiveInt, 512)
  .option(
    '--data-dir <dir>',
    'a fresh directory for config, data and log (default: under .cache/kafka)',
  )
  .action(
    async (opts: { port?: number; controllerPort?: number; heapMb: number; dataDir?: string }) => {
      // Wait for the signal from the start: one arriving while the JVM boots still stops it cleanly.
      const signalled = new Promise<NodeJS.Signals>((resolve) => {
        process.once('SIGINT', resolve);
        process.once('SIGTERM', resolve);
      });
      const broker = await startLocalBroker({ ...opts, log });
      console.log(broker.brokers.join(','));
      log(`logs: ${broker.logFile}; Ctrl-C to stop`);
      const reason = await Promise.race([signalled, broker.exited.then((code) => ({ code }))]);
      if (typeof reason === 'object') {
        log(`broker exited by itself (code ${reason.code}); see ${broker.logFile}`);
        process.exitCode = 1;
        return;
      }
      log(`${reason}: stopping the broker`);
      await broker.stop();
      log(`stopped (exit code ${await broker.exited})`);
    },
  );

try {
  await program.parseAsync();
} catch (err) {
  log(err instanceof Error ? err.message : String(err));
  process.exitCode = 1;
}
