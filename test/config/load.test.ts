import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { configKeys, loadConfig, requireBrokers } from '../../src/config/index.js';
import { thrown } from '../helpers/errors.js';

function tempFile(name: string, text: string): string {
  const file = path.join(mkdtempSync(path.join(tmpdir(), 'streamscore-config-')), name);
  writeFileSync(file, text);
  return file;
}

const errorOf = thrown;

describe('loadConfig', () => {
  it('fills every section with its defaults when nothing is given', () => {
    const config = loadConfig({ env: {} });
    expect(config.batching).toEqual({
      maxBatchSize: 128,
      autotune: true,
      latencyBudgetMs: 20,
      maxBatchBytes: 8_388_608,
      maxDelayMs: 5,
      maxQueued: 16384,
    });
    expect(config.model.replicas).toBe('auto');
    expect(config.topics.requests).toEqual(['streamscore.requests']);
    expect(config.model.backend).toBe('auto');
    expect(config.kafka.brokers).toEqual([]);
  });

  it('reads a YAML file and lets STREAMSCORE_* variables override it', () => {
    const file = tempFile(
      'c.yaml',
      'kafka:\n  brokers: [file-host:9092]\nbatching:\n  maxBatchSize: 8\n  maxDelayMs: 20\n',
    );
    const config = loadConfig({
      file,
      env: {
        STREAMSCORE_KAFKA_BROKERS: 'a:1, b:2',
        STREAMSCORE_BATCHING_MAX_BATCH_SIZE: '64',
        STREAMSCORE_KAFKA_FROM_BEGINNING: 'false',
      },
    });
    expect(config.kafka.brokers).toEqual(['a:1', 'b:2']);
    expect(config.batching.maxBatchSize).toBe(64);
    expect(config.batching.maxDelayMs).toBe(20);
    expect(config.kafka.fromBeginning).toBe(false);
  });

  it('names the key, where the bad value came from and the variable to fix it', () => {
    const err = errorOf(() => loadConfig({ env: { STREAMSCORE_BATCHING_MAX_BATCH_SIZE: 'lots' } }));
    expect(err.code).toBe('CONFIG_INVALID');
    expect(err.message).toContain('batching.maxBatchSize');
    expect(err.message).toContain('STREAMSCORE_BATCHING_MAX_BATCH_SIZE="lots"');
    expect(err.details.keys).toEqual(['batching.maxBatchSize']);
  });

  it('rejects unknown keys and lists the valid ones', () => {
    const file = tempFile('c.yaml', 'batching:\n  maxBatchsize: 8\n');
    const err = errorOf(() => loadConfig({ file, env: {} }));
    expect(err.message).toContain('batching.maxBatchsize: unknown key');
    expect(err.message).toContain('maxBatchSize');
  });

  it('rejects values out of range and malformed brokers, all at once', () => {
    const err = errorOf(() =>
      loadConfig({
        env: { STREAMSCORE_KAFKA_BROKERS: 'localhost', STREAMSCORE_BATCHING_MAX_BATCH_SIZE: '0' },
      }),
    );
    expect(err.details.keys).toEqual(['kafka.brokers', 'batching.maxBatchSize']);
    expect(err.message).toContain('expected host:port');
  });

  it('reports an unreadable file with its path', () => {
    const err = errorOf(() => loadConfig({ file: '/nonexistent/streamscore.yaml', env: {} }));
    expect(err.code).toBe('CONFIG_FILE_UNREADABLE');
    expect(err.message).toContain('/nonexistent/streamscore.yaml');
  });

  it('takes the file from STREAMSCORE_CONFIG', () => {
    const file = tempFile('c.json', JSON.stringify({ model: { name: 'iris', version: '3' } }));
    const config = loadConfig({ env: { STREAMSCORE_CONFIG: file } });
    expect(config.model).toMatchObject({ name: 'iris', version: '3' });
  });

  it('rejects a mistyped STREAMSCORE_ variable and suggests the real one', () => {
    const err = errorOf(() => loadConfig({ env: { STREAMSCORE_BATCHING_MAX_BATCHSIZE: '8' } }));
    expect(err.code).toBe('CONFIG_INVALID');
    expect(err.message).toContain(
      'STREAMSCORE_BATCHING_MAX_BATCHSIZE: not a configuration variable',
    );
    expect(err.message).toContain('did you mean STREAMSCORE_BATCHING_MAX_BATCH_SIZE?');
    expect(() =>
      loadConfig({
        env: {
          STREAMSCORE_TEST_BROKERS: 'x:1',
          STREAMSCORE_TEST_REGISTRY: 'http://x:1/apis/ccompat/v7',
          PATH: '/bin',
        },
      }),
    ).not.toThrow();
  });

  it('lets command-line flags win over the environment and the file', () => {
    const file = tempFile('c.yaml', 'kafka:\n  brokers: [file:1]\n');
    const config = loadConfig({
      file,
      env: { STREAMSCORE_KAFKA_BROKERS: 'env:1' },
      overrides: { kafka: { brokers: ['flag:1'] } },
    });
    expect(config.kafka.brokers).toEqual(['flag:1']);
  });

  it('requireBrokers fails naming kafka.brokers and the variable', () => {
    const err = errorOf(() => requireBrokers(loadConfig({ env: {} })));
    expect(err.message).toContain('kafka.brokers');
    expect(err.message).toContain('STREAMSCORE_KAFKA_BROKERS');
  });

  it('derives one environment variable per leaf key', () => {
    const envs = configKeys().map((k) => k.env);
    expect(envs).toContain('STREAMSCORE_KAFKA_BROKERS');
    expect(envs).toContain('STREAMSCORE_SHUTDOWN_DRAIN_TIMEOUT_MS');
    expect(new Set(envs).size).toBe(envs.length);
  });
});
