import { createServer } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { Readiness } from '../../src/http/readiness.js';
import { startHttpServer, type HttpServer } from '../../src/http/server.js';
import { silentLogger } from '../../src/telemetry/logger.js';
import { isStreamscoreError } from '../../src/errors.js';

const servers: HttpServer[] = [];
afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => s.close()));
});

async function start(readiness = new Readiness(), withMetrics = true): Promise<HttpServer> {
  const server = await startHttpServer({
    host: '127.0.0.1',
    port: 0,
    readiness,
    metrics: withMetrics
      ? (_req, res) => {
          res.writeHead(200, { 'content-type': 'text/plain' });
          res.end('# HELP up\nup 1\n');
        }
      : undefined,
    log: silentLogger,
  });
  servers.push(server);
  return server;
}

describe('HTTP server', () => {
  it('binds port 0 to a free port and reports it', async () => {
    const server = await start();
    expect(server.port).toBeGreaterThan(0);
    expect(server.url).toBe(`http://127.0.0.1:${server.port}`);
  });

  it('GET /healthz: 200 while the process is alive, ready or not', async () => {
    const server = await start();
    const response = await fetch(`${server.url}/healthz`);
    expect(response.status).toBe(200);
    expect(await response.json()).toEqual({ status: 'ok' });
  });

  it('GET /readyz: 503 naming what fails, 200 once ready, 503 again when the broker is lost', async () => {
    const readiness = new Readiness();
    const server = await start(readiness);

    let response = await fetch(`${server.url}/readyz`);
    expect(response.status).toBe(503);
    expect(response.headers.get('content-type')).toMatch(/^application\/json/);
    let body = (await response.json()) as { status: string; failing: string[] };
    expect(body.status).toBe('not ready');
    expect(body.failing).toEqual([
      'model: not loaded and warmed up yet',
      'kafka: consumer has not joined its group yet',
    ]);

    readiness.modelWarmed();
    readiness.assigned(2);
    response = await fetch(`${server.url}/readyz`);
    expect(response.status).toBe(200);
    expect(await response.json()).toEqual({
      status: 'ready',
      ready: true,
      checks: { model: 'ready', kafka: 'assigned', partitions: 2, stopping: false },
      failing: [],
    });

    readiness.connectionLost('consumer crashed: Connection timeout; restarting');
    response = await fetch(`${server.url}/readyz?verbose=1`);
    expect(response.status).toBe(503);
    body = (await response.json()) as { status: string; failing: string[] };
    expect(body.failing[0]).toMatch(/^kafka: consumer lost its connection/);

    readiness.assigned(2);
    expect((await fetch(`${server.url}/readyz`)).status).toBe(200);
  });

  it('GET /metrics: the scrape handler', async () => {
    const server = await start();
    const response = await fetch(`${server.url}/metrics`);
    expect(response.status).toBe(200);
    expect(await response.text()).toContain('up 1');
  });

  it('HEAD answers like GET without a body; other methods are 405; unknown paths 404', async () => {
    const server = await start();
    const head = await fetch(`${server.url}/healthz`, { method: 'HEAD' });
    expect(head.status).toBe(200);
    expect(await head.text()).toBe('');
    const post = await fetch(`${server.url}/readyz`, { method: 'POST' });
    expect(post.status).toBe(405);
    expect(post.headers.get('allow')).toBe('GET, HEAD');
    expect((await fetch(`${server.url}/nope`)).status).toBe(404);
  });

  it('POST actions get the query parameters; GET views answer JSON; each path keeps its method', async () => {
    const asked: string[] = [];
    const server = await startHttpServer({
      host: '127.0.0.1',
      port: 0,
      readiness: new Readiness(),
      actions: {
        '/switch/on': async (query) => {
          asked.push(query.get('ratio') ?? '(none)');
          return { status: 200, body: { ratio: query.get('ratio') } };
        },
      },
      views: { '/switch': () => ({ status: 200, body: { on: true } }) },
      log: silentLogger,
    });
    servers.push(server);
    const on = await fetch(`${server.url}/switch/on?ratio=0.25`, { method: 'POST' });
    expect(on.status).toBe(200);
    expect(await on.json()).toEqual({ ratio: '0.25' });
    await fetch(`${server.url}/switch/on`, { method: 'POST' });
    expect(asked).toEqual(['0.25', '(none)']);
    const view = await fetch(`${server.url}/switch`);
    expect(view.status).toBe(200);
    expect(await view.json()).toEqual({ on: true });
    expect((await fetch(`${server.url}/switch`, { method: 'POST' })).status).toBe(405);
    expect((await fetch(`${server.url}/switch/on`)).status).toBe(405);
    // Views are looked up as own paths only.
    expect((await fetch(`${server.url}/constructor`)).status).toBe(404);
  });

  it('without a metrics handler /metrics is 404', async () => {
    const server = await start(new Readiness(), false);
    expect((await fetch(`${server.url}/metrics`)).status).toBe(404);
  });

  it('a port in use fails start-up with HTTP_UNAVAILABLE naming the setting to change', async () => {
    const blocker = createServer();
    await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve));
    const port = (blocker.address() as { port: number }).port;
    try {
      const error: unknown = await startHttpServer({
        host: '127.0.0.1',
        port,
        readiness: new Readiness(),
        log: silentLogger,
      }).catch((err: unknown) => err);
      expect(isStreamscoreError(error) && error.code).toBe('HTTP_UNAVAILABLE');
      expect((error as Error).message).toMatch(/STREAMSCORE_HTTP_PORT/);
    } finally {
      await new Promise((resolve) => blocker.close(resolve));
    }
  });

  it('close() stops listening, also with a kept-alive connection open; twice is fine', async () => {
    const server = await startHttpServer({
      host: '127.0.0.1',
      port: 0,
      readiness: new Readiness(),
      log: silentLogger,
    });
    // fetch keeps the connection alive by default.
    expect((await fetch(`${server.url}/healthz`)).status).toBe(200);
    const started = Date.now();
    await Promise.all([server.close(), server.close()]);
    expect(Date.now() - started).toBeLessThan(1500);
    await expect(fetch(`${server.url}/healthz`)).rejects.toThrow();
  });
});
