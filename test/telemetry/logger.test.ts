import { context, trace } from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../../src/telemetry/logger.js';

function capture() {
  const lines: Record<string, unknown>[] = [];
  const log = createLogger('info', { write: (line: string) => lines.push(JSON.parse(line)) });
  return { lines, log };
}

describe('createLogger', () => {
  // What NodeTracerProvider.register() installs when tracing is on.
  beforeAll(() => {
    context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
  });
  afterAll(() => context.disable());

  it('adds trace_id and span_id to lines written within a span context', () => {
    const { lines, log } = capture();
    const spanContext = {
      traceId: '4bf92f3577b34da6a3ce929d0e0e4736',
      spanId: '00f067aa0ba902b7',
      traceFlags: 1,
    };
    context.with(trace.setSpanContext(context.active(), spanContext), () => {
      log.child({ requestId: 'r-1' }).info('scored');
    });
    log.info('outside');
    expect(lines[0]).toMatchObject({
      msg: 'scored',
      requestId: 'r-1',
      trace_id: spanContext.traceId,
      span_id: spanContext.spanId,
    });
    expect(lines[1]).not.toHaveProperty('trace_id');
  });

  it('redacts SASL passwords, keys and tokens', () => {
    const { lines, log } = capture();
    log.info(
      {
        kafka: { sasl: { mechanism: 'plain', username: 'u', password: 'hunter2' } },
        tls: { ssl: { key: 'PRIVATE' } },
        auth: { token: 'abc' },
      },
      'config',
    );
    const text = JSON.stringify(lines[0]);
    expect(text).not.toContain('hunter2');
    expect(text).not.toContain('PRIVATE');
    expect(text).not.toContain('"abc"');
  });
});
