import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { CONFIG_DOC_FILES, ROOT, generateConfigDocs } from '../../scripts/config-docs.js';
import { configKeys, loadConfig } from '../../src/config/index.js';

const read = (file: string) => readFileSync(path.join(ROOT, file), 'utf8');

/** The only value config/example.yaml sets away from its default (the default is no brokers). */
const EXAMPLE_BROKERS = ['127.0.0.1:9092'];

describe('config/README.md and config/example.yaml', () => {
  it('are exactly what scripts/config-docs.ts generates from the schema now', async () => {
    const docs = await generateConfigDocs();
    for (const [name, file] of Object.entries(CONFIG_DOC_FILES)) {
      expect(read(file), `${file} is out of date: run npx tsx scripts/config-docs.ts`).toBe(
        docs[name as keyof typeof docs],
      );
    }
  });

  it('document every key with its environment variable and a description', () => {
    const readme = read(CONFIG_DOC_FILES.readme);
    for (const key of configKeys()) {
      expect(readme).toContain(`| \`${key.key}\``);
      expect(readme).toContain(`| \`${key.env}\``);
      expect(key.schema.description, `${key.key} has no .describe() text`).toBeTruthy();
    }
  });

  it('example.yaml spells out every key', () => {
    const example = parseYaml(read(CONFIG_DOC_FILES.example)) as Record<string, object>;
    const all = configKeys().map((k) => k.key);
    // A nullable sub-section at its default (model.canary: null) stands for its keys.
    const expand = (key: string) => {
      const children = all.filter((k) => k.startsWith(`${key}.`));
      return children.length > 0 ? children : [key];
    };
    const keys = Object.entries(example).flatMap(([section, values]) =>
      Object.keys(values).flatMap((key) => expand(`${section}.${key}`)),
    );
    expect(keys).toEqual(configKeys().map((k) => k.key));
  });

  it('example.yaml loads to the defaults, except kafka.brokers, set to a local broker', () => {
    const defaults = loadConfig({ env: {} });
    const example = loadConfig({ file: path.join(ROOT, CONFIG_DOC_FILES.example), env: {} });
    expect(defaults.kafka.brokers).toEqual([]);
    expect(example).toEqual({
      ...defaults,
      kafka: { ...defaults.kafka, brokers: EXAMPLE_BROKERS },
    });
  });

  it('example.yaml still gives way to the environment', () => {
    const config = loadConfig({
      file: path.join(ROOT, CONFIG_DOC_FILES.example),
      env: { STREAMSCORE_KAFKA_BROKERS: 'kafka:9092' },
    });
    expect(config.kafka.brokers).toEqual(['kafka:9092']);
  });
});
