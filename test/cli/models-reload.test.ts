import { afterEach, describe, expect, it } from 'vitest';
import { modelsReload } from '../../src/cli/models.js';
import { Readiness } from '../../src/http/readiness.js';
import { startHttpServer, type HttpServer } from '../../src/http/server.js';
import type { ReloadResult } from '../../src/model/reloader.js';
import { silentLogger } from '../../src/telemetry/logger.js';
import { capturedIo } from '../helpers/cli-io.js';

const servers: HttpServer[] = [];
afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => s.close()));
});

async function serve(answer: () => Promise<{ status: number; body: unknown }>) {
  const server = await startHttpServer({
    host: '127.0.0.1',
    port: 0,
    readiness: new Readiness(),
    reload: answer,
    log: silentLogger,
  });
  servers.push(server);
  return server;
}

const io = capturedIo;

const base = { model: 'digits', previous: '1', trigger: 'http', ms: 812 };

describe('POST /models/reload and `streamscore models reload`', () => {
  it('POST only: other methods are 405; the handler answers with its status and JSON', async () => {
    let calls = 0;
    const server = await serve(async () => {
      calls++;
      return { status: 200, body: { ...base, outcome: 'unchanged', current: '1' } };
    });
    const get = await fetch(`${server.url}/models/reload`);
    expect(get.status).toBe(405);
    expect(get.headers.get('allow')).toBe('POST');
    const post = await fetch(`${server.url}/models/reload`, { method: 'POST' });
    expect(post.status).toBe(200);
    expect(await post.json()).toMatchObject({ outcome: 'unchanged' });
    expect(calls).toBe(1);
  });

  it('prints swapped, unchanged and refused; exit 0, 0, 1', async () => {
    const answers: { status: number; body: ReloadResult }[] = [
      { status: 200, body: { ...base, outcome: 'swapped', current: '2', candidate: '2' } },
      { status: 200, body: { ...base, outcome: 'unchanged', current: '2', waiting: ['3'] } },
      {
        status: 422,
        body: {
          ...base,
          previous: '2',
          outcome: 'refused',
          current: '2',
          candidate: '3',
          error: {
            code: 'CHECKSUM_MISMATCH',
            message: 'model file weights.bin in /m/digits/3 has sha256 …',
            file: '/m/digits/3/weights.bin',
          },
        },
      },
    ];
    const server = await serve(async () => answers.shift()!);
    const t = io();
    expect(await modelsReload({ url: server.url }, t.io)).toBe(0);
    expect(await modelsReload({ url: `${server.url}/` }, t.io)).toBe(0);
    expect(await modelsReload({ url: server.url }, t.io)).toBe(1);
    expect(t.out).toEqual([
      'swapped: digits 1 -> 2 in 812 ms\n',
      'unchanged: digits 2 is the latest complete version (waiting for card.json in 3)\n',
      'refused: digits 3: CHECKSUM_MISMATCH: model file weights.bin in /m/digits/3 has sha256 …; 2 keeps serving\n',
    ]);
  });

  it('--json prints the answer; a pinned worker (409) and no worker at all exit 1', async () => {
    const server = await serve(async () => ({
      status: 409,
      body: { error: 'model.version is pinned to 1; reload follows only "latest"' },
    }));
    const t = io();
    expect(await modelsReload({ url: server.url, json: true }, t.io)).toBe(1);
    expect(JSON.parse(t.out.join(''))).toMatchObject({ status: 409 });
    expect(await modelsReload({ url: server.url }, t.io)).toBe(1);
    expect(t.err.at(-1)).toContain('answered 409: model.version is pinned to 1');
    await server.close();
    expect(await modelsReload({ url: server.url }, t.io)).toBe(1);
    expect(t.err.at(-1)).toContain('cannot reach the worker');
  });
});
