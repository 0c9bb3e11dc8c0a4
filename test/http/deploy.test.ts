/**
 * Static checks that the container files expose and probe the HTTP server the worker actually
 * serves (the rest of Dockerfile and docker-compose.yml: test/deploy/docker-compose.test.ts).
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { loadConfig } from '../../src/config/index.js';
import { REPO_ROOT } from '../model/helpers.js';

const read = (file: string) => readFileSync(path.join(REPO_ROOT, file), 'utf8');

interface ComposeService {
  environment?: Record<string, string | number | boolean>;
  healthcheck?: { test?: string[] };
  ports?: string[];
  expose?: string[];
}

const compose = parseYaml(read('docker-compose.yml'), { merge: true }) as {
  services: Record<string, ComposeService>;
};
const worker = compose.services['worker']!;
const workerEnv = Object.fromEntries(
  Object.entries(worker.environment ?? {}).map(([k, v]) => [k, String(v)]),
);

describe('HTTP endpoints in the container files', () => {
  const { http } = loadConfig({ env: workerEnv });

  it('compose: the worker serves HTTP, publishes its port and is healthy only when ready', () => {
    expect(http.enabled).toBe(true);
    expect(worker.expose).toContain(String(http.port));
    expect(worker.ports).toContain(`127.0.0.1::${http.port}`);
    const probe = (worker.healthcheck?.test ?? []).join(' ');
    expect(probe).toContain(`http://127.0.0.1:${http.port}/readyz`);
  });

  it('Dockerfile: exposes the default port and checks /healthz on the configured one', () => {
    const defaults = loadConfig({ env: {} }).http;
    const dockerfile = read('Dockerfile');
    expect(dockerfile).toMatch(new RegExp(`^EXPOSE ${defaults.port}$`, 'm'));
    const healthcheck = dockerfile
      .replace(/\\\n/g, ' ')
      .split('\n')
      .find((line) => line.startsWith('HEALTHCHECK'));
    expect(healthcheck).toBeDefined();
    expect(healthcheck).toContain('STREAMSCORE_HTTP_PORT');
    expect(healthcheck).toContain(`|| ${defaults.port}`);
    expect(healthcheck).toContain('/healthz');
  });
});
