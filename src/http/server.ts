/**
 * The worker's HTTP endpoints (node:http, no framework):
 *
 *   GET /healthz  200 while the process is alive (liveness)
 *   GET /readyz   200 when ready (model warm, partitions assigned, connected), else 503; JSON body
 *   GET /metrics  Prometheus text of every metric (the OpenTelemetry Prometheus exporter)
 *   POST /models/reload  look for a newer model version and hot-swap it in (see ModelReloader)
 *   POST /models/promote, /models/rollback  end a candidate's trial (model.canary) by hand
 *   GET /tracing  tracing's run-time state (JSON)
 *   POST /tracing/pause, /tracing/resume[?sampleRatio=r]  stop and start tracing new requests
 *
 * HEAD works wherever GET does. Anything else is 404, or 405 for another method.
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { StreamscoreError } from '../errors.js';
import type { Logger } from '../telemetry/logger.js';
import type { Readiness } from './readiness.js';

export interface HttpServerOptions {
  host: string;
  /** 0: any free port (see HttpServer.port). */
  port: number;
  readiness: Readiness;
  /** Answers GET /metrics; without it /metrics is 404. */
  metrics?: ((request: IncomingMessage, response: ServerResponse) => void) | undefined;
  /** Answers POST /models/reload: status and JSON body. Without it the path is 404. */
  reload?: (() => Promise<{ status: number; body: unknown }>) | undefined;
  /**
   * More POST endpoints by path (POST /models/promote, /models/rollback, /tracing/pause), given
   * the query string's parameters; absent paths are 404.
   */
  actions?:
    | Record<string, (query: URLSearchParams) => Promise<{ status: number; body: unknown }>>
    | undefined;
  /** More GET endpoints answering JSON, by path (GET /tracing); absent paths are 404. */
  views?: Record<string, () => { status: number; body: unknown }> | undefined;
  log: Logger;
}

export interface HttpServer {
  host: string;
  /** The port actually bound (the configured one, or the one chosen for port 0). */
  port: number;
  /** e.g. http://127.0.0.1:9464 (a wildcard host is given as 127.0.0.1). */
  url: string;
  /** Stops listening and closes idle connections; in-flight requests finish. Idempotent. */
  close(): Promise<void>;
}

/** How long close() lets in-flight requests finish before cutting their connections. */
const CLOSE_GRACE_MS = 2000;

function sendJson(response: ServerResponse, status: number, body: unknown, head: boolean): void {
  const text = JSON.stringify(body) + '\n';
  response.writeHead(status, {
    'content-type': 'application/json; charset=utf-8',
    'content-length': Buffer.byteLength(text),
    'cache-control': 'no-store',
  });
  response.end(head ? undefined : text);
}

export async function startHttpServer(options: HttpServerOptions): Promise<HttpServer> {
  const { readiness, metrics } = options;
  const log = options.log.child({ component: 'http' });

  const handle = (request: IncomingMessage, response: ServerResponse): void => {
    const [path, search] = (request.url ?? '/').split('?', 2) as [string, string | undefined];
    const head = request.method === 'HEAD';
    const action =
      path === '/models/reload' ? options.reload : path ? options.actions?.[path] : undefined;
    if (action) {
      if (request.method !== 'POST') {
        response.setHeader('allow', 'POST');
        sendJson(response, 405, { error: `method not allowed: ${request.method}` }, head);
        return;
      }
      request.resume();
      action(new URLSearchParams(search)).then(
        ({ status, body }) => sendJson(response, status, body, false),
        (err: unknown) => {
          log.error({ err, path }, 'http action failed');
          sendJson(
            response,
            500,
            { error: err instanceof Error ? err.message : String(err) },
            false,
          );
        },
      );
      return;
    }
    const view = Object.hasOwn(options.views ?? {}, path) ? options.views![path] : undefined;
    const known =
      path === '/healthz' ||
      path === '/readyz' ||
      (path === '/metrics' && !!metrics) ||
      view !== undefined;
    if (!known) {
      sendJson(response, 404, { error: `not found: ${path}` }, head);
      return;
    }
    if (request.method !== 'GET' && !head) {
      response.setHeader('allow', 'GET, HEAD');
      sendJson(response, 405, { error: `method not allowed: ${request.method}` }, head);
      return;
    }
    switch (path) {
      case '/healthz':
        sendJson(response, 200, { status: 'ok' }, head);
        return;
      case '/readyz': {
        const state = readiness.state();
        sendJson(
          response,
          state.ready ? 200 : 503,
          { status: state.ready ? 'ready' : 'not ready', ...state },
          head,
        );
        return;
      }
      default:
        if (view) {
          const { status, body } = view();
          sendJson(response, status, body, head);
          return;
        }
        metrics!(request, response);
    }
  };

  const server = createServer((request, response) => {
    try {
      handle(request, response);
    } catch (err) {
      log.error({ err, url: request.url }, 'http request failed');
      if (!response.headersSent) sendJson(response, 500, { error: 'internal error' }, false);
      else response.destroy();
    }
  });
  await new Promise<void>((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException) => {
      reject(
        new StreamscoreError(
          'HTTP_UNAVAILABLE',
          `cannot serve HTTP on ${options.host}:${options.port}: ${err.message}. Fix: choose another http.port (STREAMSCORE_HTTP_PORT, 0 for any free port) or turn it off with http.enabled: false.`,
          { cause: err, details: { host: options.host, port: options.port } },
        ),
      );
    };
    server.once('error', onError);
    server.listen({ host: options.host, port: options.port }, () => {
      server.off('error', onError);
      resolve();
    });
  });
  server.on('error', (err) => log.error({ err }, 'http server error'));

  const address = server.address() as AddressInfo;
  const wildcard = address.address === '0.0.0.0' || address.address === '::';
  const urlHost = wildcard
    ? '127.0.0.1'
    : address.family === 'IPv6'
      ? `[${address.address}]`
      : address.address;
  const url = `http://${urlHost}:${address.port}`;
  log.info({ host: address.address, port: address.port, url }, 'http server listening');

  let closed: Promise<void> | null = null;
  return {
    host: address.address,
    port: address.port,
    url,
    close() {
      closed ??= new Promise<void>((resolve) => {
        const force = setTimeout(() => server.closeAllConnections(), CLOSE_GRACE_MS).unref();
        server.close(() => {
          clearTimeout(force);
          resolve();
        });
        server.closeIdleConnections();
      });
      return closed;
    },
  };
}
