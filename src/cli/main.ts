import { readFileSync } from 'node:fs';
import { Command } from 'commander';
import { loadConfig, requireBrokers, type StreamscoreConfig } from '../config/index.js';
import { isStreamscoreError } from '../errors.js';
import { createKafka, ensureTopics } from '../kafka/kafkajs.js';
import { startService } from '../service.js';
import { positiveInt, withConfigFlags } from './flags.js';
import { registerModelCommands } from './models.js';
import { registerTracingCommand } from './tracing.js';
import { registerReplayCommand } from './replay.js';
import { registerScoreCommand } from './score.js';
import { registerProduceCommand } from './produce.js';
import { createLogger } from '../telemetry/logger.js';

const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as {
  version: string;
};

interface ConfigFlags {
  config?: string;
  brokers?: string;
}

function configFrom(flags: ConfigFlags): StreamscoreConfig {
  const brokers = flags.brokers
    ?.split(',')
    .map((b) => b.trim())
    .filter((b) => b.length > 0);
  const overrides = brokers ? { kafka: { brokers } } : {};
  return loadConfig({ file: flags.config, overrides });
}

/** Prints a configuration or startup error the way an operator can act on it, then exits. */
function fail(err: unknown): never {
  if (isStreamscoreError(err)) {
    process.stderr.write(`streamscore: ${err.code}: ${err.message}\n`);
  } else {
    process.stderr.write(`streamscore: ${(err as Error)?.stack ?? String(err)}\n`);
  }
  process.exit(isStreamscoreError(err) && err.code.startsWith('CONFIG') ? 78 : 1);
}

export function buildProgram(): Command {
  const program = new Command()
    .name('streamscore')
    .description(
      'Streaming inference worker: Avro requests from Kafka → TensorFlow.js → Avro results',
    )
    .version(pkg.version);

  const withConfig = withConfigFlags;

  withConfig(program.command('run'))
    .description('consume requests, score them, produce results until SIGTERM/SIGINT')
    .action(async (flags: ConfigFlags) => {
      let config: StreamscoreConfig;
      try {
        config = configFrom(flags);
      } catch (err) {
        fail(err);
      }
      const log = createLogger(config.log.level);
      try {
        const service = await startService(config, {
          log,
          onFatal: () => process.exit(1),
        });
        let signals = 0;
        const onSignal = (signal: NodeJS.Signals) => {
          if (++signals > 1) {
            log.warn({ signal }, 'second signal: exiting without draining');
            process.exit(130);
          }
          log.info({ signal }, 'stopping: draining in-flight requests');
          void service.stop().then(
            (report) => process.exit(report.drained ? 0 : 1),
            (err: unknown) => {
              log.error({ err }, 'stop failed');
              process.exit(1);
            },
          );
        };
        process.on('SIGTERM', onSignal);
        process.on('SIGINT', onSignal);
      } catch (err) {
        log.flush();
        fail(err);
      }
    });

  const topics = program.command('topics').description('manage the configured topics');
  withConfig(topics.command('create [extra...]'))
    .description(
      'create the configured topics (requests, results — also those of mappings —, dead letters, failed, shadow, events) and any extra ones named, if they do not exist',
    )
    .option('-p, --partitions <n>', 'partitions per topic', positiveInt, 4)
    .action(async (extra: string[], flags: ConfigFlags & { partitions: number }) => {
      try {
        const config = configFrom(flags);
        requireBrokers(config);
        const log = createLogger(config.log.level);
        const names = [
          ...new Set([
            ...config.topics.requests,
            config.topics.results,
            ...config.mappings.byTopic.flatMap((m) => (m.result.topic ? [m.result.topic] : [])),
            config.topics.deadLetter,
            ...[config.topics.failed, config.topics.shadow, config.topics.events].filter(
              (t): t is string => t !== null,
            ),
            ...extra,
          ]),
        ];
        const created = await ensureTopics(
          createKafka(config.kafka, log),
          names.map((topic) => ({ topic, numPartitions: flags.partitions })),
        );
        process.stdout.write(
          created.length > 0 ? `created: ${created.join(', ')}\n` : 'all topics already exist\n',
        );
      } catch (err) {
        fail(err);
      }
    });

  withConfig(program.command('config'))
    .description(
      'print the effective configuration (defaults ← file ← environment ← flags) as JSON',
    )
    .action((flags: ConfigFlags) => {
      try {
        process.stdout.write(JSON.stringify(configFrom(flags), null, 2) + '\n');
      } catch (err) {
        fail(err);
      }
    });

  registerModelCommands(program);
  registerReplayCommand(program);
  registerScoreCommand(program);
  registerProduceCommand(program);
  registerTracingCommand(program);

  return program;
}

await buildProgram().parseAsync(process.argv);
