/**
 * GET /tracing, POST /tracing/pause and POST /tracing/resume[?sampleRatio=r]: tracing's run-time
 * switch on the worker's HTTP server (RequestTracing.pause / resume).
 */
import type { Logger } from '../telemetry/logger.js';
import { parseSampleRatio, type RequestTracing, type TracingState } from '../telemetry/tracing.js';
import type { HttpServerOptions } from './server.js';

const NOT_CONFIGURED: TracingState = { configured: false, on: false, sampleRatio: 0, inFlight: 0 };

const TRACING_OFF = {
  status: 409,
  body: {
    error:
      'tracing is off: set telemetry.otlpEndpoint (STREAMSCORE_TELEMETRY_OTLP_ENDPOINT) and a telemetry.tracesSampleRatio above 0, and restart',
  },
};

const NOT_RUNNING = {
  status: 503,
  body: { error: 'the worker is starting or stopping: tracing can be switched once it runs' },
};

/**
 * The endpoints, acting on whatever `tracing()` gives when asked: null while the worker is not
 * running (503, when `configured`: tracing will be on once it runs) or when it was started
 * without tracing (409, naming the settings).
 */
export function tracingEndpoints(
  tracing: () => RequestTracing | null,
  log: Logger,
  configured: boolean,
): Required<Pick<HttpServerOptions, 'actions' | 'views'>> {
  const change = (apply: (t: RequestTracing, query: URLSearchParams) => void) => {
    return async (query: URLSearchParams) => {
      const t = tracing();
      if (!t) return configured ? NOT_RUNNING : TRACING_OFF;
      try {
        apply(t, query);
      } catch (err) {
        if (err instanceof RangeError) return { status: 400, body: { error: err.message } };
        throw err;
      }
      const state = t.state;
      log.info({ tracing: state }, state.on ? 'tracing on' : 'tracing paused');
      return { status: 200, body: state };
    };
  };
  return {
    actions: {
      '/tracing/pause': change((t) => t.pause()),
      '/tracing/resume': change((t, query) => {
        const ratio = query.get('sampleRatio');
        t.resume(ratio === null ? undefined : parseSampleRatio(ratio));
      }),
    },
    views: {
      '/tracing': () => {
        const state = tracing()?.state;
        if (state) return { status: 200, body: state };
        return configured ? NOT_RUNNING : { status: 200, body: NOT_CONFIGURED };
      },
    },
  };
}
