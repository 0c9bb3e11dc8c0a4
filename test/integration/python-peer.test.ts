/**
 * The Python reference peer (test/interop/: confluent-kafka with its Avro serializer, as users'
 * own tools run it) against the run's broker and Schema Registry, with no streamscore worker
 * involved: what produce_avro.py writes, consume_avro.py reads back unchanged, and kafkajs with
 * @kafkajs/confluent-schema-registry (the worker's clients) decodes the same records.
 *
 * The venv comes from scripts/python-peer.sh (.ci/run calls it before the tests); without it this
 * file fails, saying so, rather than skipping.
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { SchemaRegistry } from '@kafkajs/confluent-schema-registry';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { freshTopics, readAll, uniqueTopic } from './helpers/kafka.js';

const execFileAsync = promisify(execFile);

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const PYTHON = path.join(ROOT, '.cache', 'pyenv', 'bin', 'python');
const INTEROP = path.join(ROOT, 'test', 'interop');

const brokers = inject('kafkaBrokers');
const registryUrl = inject('registryUrl');

const schema = {
  type: 'record',
  name: 'PeerProbe',
  namespace: 'streamscore.interop',
  fields: [
    { name: 'id', type: 'string' },
    { name: 'seq', type: 'long' },
    { name: 'amount', type: 'double' },
    // Multiples of 0.5: exact in a 32-bit float, so equal after the round trip.
    { name: 'features', type: { type: 'array', items: 'float' } },
    { name: 'payload', type: 'bytes' },
    { name: 'note', type: ['null', 'string'], default: null },
  ],
};

interface Probe {
  id: string;
  seq: number;
  amount: number;
  features: number[];
  /** base64, as the peer's JSON carries bytes. */
  payload: string;
  note: string | null;
}

const COUNT = 50;
const records: Probe[] = Array.from({ length: COUNT }, (_, i) => ({
  id: `probe-${String(i).padStart(3, '0')}`,
  seq: 1_000_000_000_000 + i,
  amount: i / 3,
  features: [i * 0.5, i - 25, 0],
  payload: Buffer.from([i, 255 - i, 0, 1]).toString('base64'),
  note: i % 4 === 0 ? null : `note ${i}`,
}));

/** Runs a peer script with the venv's python; a failure's message carries the script's stderr. */
async function python(script: string, args: string[]): Promise<string> {
  const { stdout } = await execFileAsync(PYTHON, [path.join(INTEROP, script), ...args], {
    cwd: ROOT,
    timeout: 120_000,
    maxBuffer: 16 * 1024 * 1024,
  });
  return stdout;
}

const byId = <T extends { id: string }>(list: T[]): T[] =>
  [...list].sort((a, b) => a.id.localeCompare(b.id));

describe('Python reference peer (confluent-kafka + AvroSerializer)', () => {
  let dir: string;

  beforeAll(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'streamscore-peer-'));
    await writeFile(path.join(dir, 'probe.avsc'), JSON.stringify(schema, null, 2));
    await writeFile(
      path.join(dir, 'probe.jsonl'),
      records.map((record) => JSON.stringify(record)).join('\n') + '\n',
    );
  });

  afterAll(async () => {
    if (dir !== undefined) await rm(dir, { recursive: true, force: true });
  });

  it('produces 50 records through the registry and consumes the same 50 back', async () => {
    expect(
      existsSync(PYTHON),
      `no Python peer venv at ${PYTHON}: run scripts/python-peer.sh first (CI's .ci/run does)`,
    ).toBe(true);
    const { topic } = await freshTopics(brokers, 'py-peer', ['topic'], 2);
    const common = ['--brokers', brokers.join(','), '--registry', registryUrl, '--topic', topic];

    const summary = JSON.parse(
      await python('produce_avro.py', [
        ...common,
        '--schema',
        path.join(dir, 'probe.avsc'),
        '--input',
        path.join(dir, 'probe.jsonl'),
        '--key-field',
        'id',
      ]),
    ) as { produced: number; subject: string; schemaId: number };
    expect(summary).toMatchObject({ produced: COUNT, subject: `${topic}-value` });

    const out = await python('consume_avro.py', [
      ...common,
      '--count',
      String(COUNT),
      '--timeout',
      '60',
      '--group',
      uniqueTopic('py-peer-group'),
    ]);
    const consumed = out
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line) as Probe);
    // Two partitions: the order across them is not the order sent.
    expect(byId(consumed)).toEqual(records);

    // The worker's clients read the same bytes: Confluent framing with the registered schema's
    // id, the key field as the key.
    const messages = await readAll(brokers, topic, { expected: COUNT });
    expect(messages).toHaveLength(COUNT);
    const registry = new SchemaRegistry({ host: registryUrl });
    const decoded = await Promise.all(
      messages.map(async (message) => {
        expect(message.value![0]).toBe(0);
        expect(message.value!.readInt32BE(1)).toBe(summary.schemaId);
        const value = (await registry.decode(message.value!)) as Omit<Probe, 'payload'> & {
          payload: Buffer;
        };
        expect(message.key?.toString('utf8')).toBe(value.id);
        return { ...value, payload: value.payload.toString('base64') };
      }),
    );
    expect(byId(decoded)).toEqual(records);
  });
});
