/**
 * A local Jaeger v2 (OTLP in, traces in memory, query API) for development and for CI.
 *
 *   npm run jaeger -- fetch    build the binary with Go into .cache/jaeger (CI's install step)
 *   npm run jaeger -- start    run Jaeger in the foreground until Ctrl-C, printing its endpoints
 *
 * Point the worker at it with STREAMSCORE_TELEMETRY_OTLP_ENDPOINT=<the OTLP/HTTP endpoint printed>.
 */
import { Command, InvalidArgumentError } from 'commander';
import { ensureJaeger, startLocalJaeger } from '../src/telemetry/local-jaeger.js';

const log = (msg: string): void => console.error(`[jaeger] ${msg}`);

function port(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n <= 0 || n > 65535) {
    throw new InvalidArgumentError('expected a port number');
  }
  return n;
}

const program = new Command('jaeger').description(
  'a Jaeger v2 all-in-one (OTLP receiver, in-memory storage, query API) on 127.0.0.1',
);

program
  .command('fetch')
  .description('build the Jaeger binary with Go into .cache/jaeger (skipped when already built)')
  .action(async () => {
    console.log(await ensureJaeger({ log }));
  });

program
  .command('start')
  .description('start Jaeger and keep it running until SIGINT or SIGTERM')
  .option('--otlp-http-port <port>', 'OTLP/HTTP receiver port (default: a free port)', port)
  .option('--otlp-grpc-port <port>', 'OTLP/gRPC receiver port (default: a free port)', port)
  .option('--query-port <port>', 'query API port (default: a free port)', port)
  .option('--query-grpc-port <port>', 'query gRPC port (default: a free port)', port)
  .option('--log-level <level>', "Jaeger's own log level", 'info')
  .action(
    async (opts: {
      otlpHttpPort?: number;
      otlpGrpcPort?: number;
      queryPort?: number;
      queryGrpcPort?: number;
      logLevel: string;
    }) => {
      const signalled = new Promise<NodeJS.Signals>((resolve) => {
        process.once('SIGINT', resolve);
        process.once('SIGTERM', resolve);
      });
      const jaeger = await startLocalJaeger({ ...opts, log });
      console.log(`OTLP/HTTP  ${jaeger.otlpHttpEndpoint}   (traces: /v1/traces)`);
      console.log(`OTLP/gRPC  ${jaeger.otlpGrpcEndpoint}`);
      console.log(`query API  ${jaeger.queryUrl}/api/v3/traces/<trace id>`);
      console.log(`           ${jaeger.queryUrl}/api/v3/services`);
      console.log(
        `worker     STREAMSCORE_TELEMETRY_OTLP_ENDPOINT=${jaeger.otlpHttpEndpoint} npm start`,
      );
      log(`log: ${jaeger.logFile}; Ctrl-C to stop`);
      const reason = await Promise.race([signalled, jaeger.exited.then((code) => ({ code }))]);
      if (typeof reason === 'object') {
        log(`Jaeger exited by itself (code ${reason.code}); see ${jaeger.logFile}`);
        process.exitCode = 1;
        return;
      }
      log(`${reason}: stopping Jaeger`);
      await jaeger.stop();
      log(`stopped (exit code ${await jaeger.exited})`);
    },
  );

try {
  await program.parseAsync();
} catch (err) {
  log(err instanceof Error ? err.message : String(err));
  process.exitCode = 1;
}
