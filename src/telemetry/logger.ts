import { pino, type Logger, type LoggerOptions, type DestinationStream } from 'pino';

export type { Logger };

/** JSON logs with ids as fields; secrets that may sit in config objects never reach the output. */
export function createLogger(
  level: LoggerOptions['level'] = 'info',
  destination?: DestinationStream,
): Logger {
  const options: LoggerOptions = {
    level,
    base: { service: 'streamscore' },
    redact: {
      paths: ['*.password', '*.sasl.password', 'kafka.sasl', '*.ssl.key', '*.token'],
      censor: '[redacted]',
    },
  };
  return destination ? pino(options, destination) : pino(options);
}

/** A logger that drops everything, for tests and library use. */
export const silentLogger: Logger = pino({ level: 'silent' });
