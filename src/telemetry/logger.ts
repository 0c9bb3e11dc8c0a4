import { context, trace } from '@opentelemetry/api';
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
    // A line written while a span is active (a request's context) carries its ids, so logs and
    // traces join up in whatever backend holds both.
    mixin() {
      const span = trace.getSpan(context.active());
      if (!span) return {};
      const { traceId, spanId } = span.spanContext();
      return { trace_id: traceId, span_id: spanId };
    },
    redact: {
      paths: [
        '*.password',
        '*.sasl.password',
        'kafka.sasl',
        '*.ssl.key',
        '*.token',
        '*.headers.authorization',
        '*.headers.Authorization',
      ],
      censor: '[redacted]',
    },
  };
  return destination ? pino(options, destination) : pino(options);
}

/** A logger that drops everything, for tests and library use. */
export const silentLogger: Logger = pino({ level: 'silent' });
