/** Option parsers and the configuration flags every `streamscore` command shares. */
import { InvalidArgumentError, type Command } from 'commander';

export function positiveInt(text: string): number {
  const value = Number(text);
  if (!Number.isInteger(value) || value < 1) {
    throw new InvalidArgumentError('expected a whole number ≥ 1');
  }
  return value;
}

export function positiveNumber(text: string): number {
  const value = Number(text);
  if (!Number.isFinite(value) || value <= 0)
    throw new InvalidArgumentError('expected a number > 0');
  return value;
}

/** `-c, --config` and `-b, --brokers`, as `configFrom` reads them. */
export function withConfigFlags(command: Command): Command {
  return command
    .option('-c, --config <file>', 'YAML or JSON configuration file (also STREAMSCORE_CONFIG)')
    .option(
      '-b, --brokers <list>',
      'bootstrap brokers, host:port[,host:port] (also STREAMSCORE_KAFKA_BROKERS)',
    );
}
