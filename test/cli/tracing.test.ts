import { InMemorySpanExporter, SimpleSpanProcessor } from '@opentelemetry/sdk-trace';
import { Command } from 'commander';
import { afterEach, describe, expect, it } from 'vitest';
import { registerTracingCommand, tracingCommand } from '../../src/cli/tracing.js';
import { Readiness } from '../../src/http/readiness.js';
import { startHttpServer, type HttpServer } from '../../src/http/server.js';
import { tracingEndpoints } from '../../src/http/tracing-endpoints.js';
import { silentLogger } from '../../src/telemetry/logger.js';
import { SpanBuilder } from '../../src/telemetry/span-builder.js';
import { LocalSpanSink, RequestTracing } from '../../src/telemetry/tracing.js';
import { capturedIo } from '../helpers/cli-io.js';

const servers: HttpServer[] = [];
afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => s.close()));
});

/** A worker's HTTP server with the tracing endpoints over `tracing` (null: started without). */
async function serve(tracing: RequestTracing | null, configured = true): Promise<HttpServer> {
  const server = await startHttpServer({
    host: '127.0.0.1',
    port: 0,
    readiness: new Readiness(),
    ...tracingEndpoints(() => tracing, silentLogger, configured),
    log: silentLogger,
  });
  servers.push(server);
  return server;
}

function newTracing(sampleRatio: number): RequestTracing {
  const builder = new SpanBuilder({
    spanProcessors: [new SimpleSpanProcessor({ exporter: new InMemorySpanExporter() })],
    groupId: 'g',
  });
  return new RequestTracing(new LocalSpanSink(builder), sampleRatio);
}

const io = capturedIo;

describe('GET/POST /tracing and `streamscore tracing`', () => {
  it('shows, pauses and resumes the worker’s tracing; exit 0', async () => {
    const tracing = newTracing(0.1);
    const server = await serve(tracing);
    const t = io();
    expect(await tracingCommand('status', { url: server.url }, t.io)).toBe(0);
    expect(await tracingCommand('pause', { url: server.url }, t.io)).toBe(0);
    expect(tracing.state.on).toBe(false);
    expect(await tracingCommand('resume', { url: server.url }, t.io)).toBe(0);
    expect(tracing.state).toMatchObject({ on: true, sampleRatio: 0.1 });
    expect(await tracingCommand('resume', { url: server.url, sampleRatio: 0.25 }, t.io)).toBe(0);
    expect(tracing.state.sampleRatio).toBe(0.25);
    expect(t.out).toEqual([
      'tracing: on, new traces kept at 10 %; 0 requests in flight traced\n',
      'tracing: paused (new traces were kept at 10 %); 0 requests in flight traced\n',
      'tracing: on, new traces kept at 10 %; 0 requests in flight traced\n',
      'tracing: on, new traces kept at 25 %; 0 requests in flight traced\n',
    ]);
    expect(t.err).toEqual([]);
    const json = io();
    expect(await tracingCommand('status', { url: server.url, json: true }, json.io)).toBe(0);
    expect(JSON.parse(json.out.join(''))).toEqual({
      status: 200,
      configured: true,
      on: true,
      sampleRatio: 0.25,
      inFlight: 0,
    });
  });

  it('a bad ratio is 400 and changes nothing; a worker started without tracing answers 409 naming the settings; exit 1', async () => {
    const tracing = newTracing(1);
    const server = await serve(tracing);
    for (const ratio of ['0', '2', 'abc', '']) {
      const response = await fetch(`${server.url}/tracing/resume?sampleRatio=${ratio}`, {
        method: 'POST',
      });
      expect(response.status, ratio).toBe(400);
      expect(((await response.json()) as { error: string }).error).toContain('sampleRatio');
    }
    expect(tracing.state).toMatchObject({ on: true, sampleRatio: 1 });

    // Configured, but the worker is not running yet (or any more): 503, try again.
    const starting = await serve(null);
    expect((await fetch(`${starting.url}/tracing`)).status).toBe(503);
    const early = await fetch(`${starting.url}/tracing/pause`, { method: 'POST' });
    expect(early.status).toBe(503);
    expect(((await early.json()) as { error: string }).error).toContain('starting or stopping');

    const off = await serve(null, false);
    expect(await (await fetch(`${off.url}/tracing`)).json()).toEqual({
      configured: false,
      on: false,
      sampleRatio: 0,
      inFlight: 0,
    });
    const t = io();
    expect(await tracingCommand('status', { url: off.url }, t.io)).toBe(0);
    expect(await tracingCommand('pause', { url: off.url }, t.io)).toBe(1);
    expect(t.out).toEqual([
      'tracing: off (the worker was started without telemetry.otlpEndpoint)\n',
    ]);
    expect(t.err.join('')).toMatch(/answered 409: tracing is off: set telemetry\.otlpEndpoint/);
  });

  it('an unreachable worker and a ratio out of range on the command line are errors', async () => {
    const server = await serve(newTracing(1));
    const url = server.url;
    await server.close();
    const t = io();
    expect(await tracingCommand('status', { url }, t.io)).toBe(1);
    expect(t.err.join('')).toContain(`cannot reach the worker at ${url}/tracing`);

    const program = new Command().exitOverride().configureOutput({ writeErr: () => undefined });
    registerTracingCommand(program, t.io);
    await expect(
      program.parseAsync(['tracing', 'resume', '--sample-ratio', '2'], { from: 'user' }),
    ).rejects.toThrow(/expected a number > 0 and ≤ 1/);
  });
});
