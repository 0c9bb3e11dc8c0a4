/**
 * The run's Schema Registry (global-setup.ts: a local Apicurio Registry, or
 * STREAMSCORE_TEST_REGISTRY) speaks the Confluent API as the worker's client uses it: register,
 * Confluent wire-format encode and decode, versions, and per-subject compatibility checks.
 */
import { randomBytes } from 'node:crypto';
import { SchemaRegistry, SchemaType } from '@kafkajs/confluent-schema-registry';
import { describe, expect, inject, it } from 'vitest';

const url = inject('registryUrl');

/** A subject no other test or earlier run against the same registry has used. */
function freshSubject(name: string): string {
  return `streamscore-test-${name}-${Date.now().toString(36)}-${randomBytes(4).toString('hex')}-value`;
}

const fields = [
  { name: 'id', type: 'string' },
  { name: 'amount', type: 'double' },
  { name: 'pixels', type: 'bytes' },
];
const schemaV1 = { type: 'record', name: 'Payment', namespace: 'streamscore.test', fields };

const avro = (schema: object) => ({
  type: SchemaType.AVRO as const,
  schema: JSON.stringify(schema),
});

/** PUT /config/<subject>: the subject's compatibility level, as an operator would set it. */
async function setCompatibility(subject: string, compatibility: string): Promise<void> {
  const res = await fetch(`${url}/config/${encodeURIComponent(subject)}`, {
    method: 'PUT',
    headers: { 'content-type': 'application/vnd.schemaregistry.v1+json' },
    body: JSON.stringify({ compatibility }),
  });
  expect(res.status, await res.text()).toBe(200);
}

describe('Schema Registry (Confluent API)', () => {
  it('registers a schema, and a message encoded with its id decodes back', async () => {
    const registry = new SchemaRegistry({ host: url });
    const subject = freshSubject('roundtrip');
    const { id } = await registry.register(avro(schemaV1), { subject });
    expect(id).toBeGreaterThan(0);
    expect(await registry.getRegistryId(subject, 1)).toBe(id);
    expect(await registry.getLatestSchemaId(subject)).toBe(id);

    const record = { id: 'p-1', amount: 12.5, pixels: Buffer.from([0, 1, 254, 255]) };
    const encoded = await registry.encode(id, record);
    // Confluent wire format: magic byte 0, then the schema id as a big-endian int32.
    expect(encoded[0]).toBe(0);
    expect(encoded.readInt32BE(1)).toBe(id);

    // A fresh client has no cache: decode() fetches the writer schema by id from the registry.
    const decoded = (await new SchemaRegistry({ host: url }).decode(encoded)) as typeof record;
    expect(decoded).toEqual(record);
  });

  it('under BACKWARD compatibility, accepts an optional field with a default as a new version and refuses a required one', async () => {
    const registry = new SchemaRegistry({ host: url });
    const subject = freshSubject('compat');
    const v1 = await registry.register(avro(schemaV1), { subject });
    await setCompatibility(subject, 'BACKWARD');

    const schemaV2 = {
      ...schemaV1,
      fields: [...fields, { name: 'currency', type: ['null', 'string'], default: null }],
    };
    const v2 = await registry.register(avro(schemaV2), { subject });
    expect(v2.id).not.toBe(v1.id);
    expect(await registry.getRegistryId(subject, 2)).toBe(v2.id);
    expect(await registry.getLatestSchemaId(subject)).toBe(v2.id);

    // Readers on v2 still decode what v1 writers sent: the new field takes its default.
    const old = await registry.encode(v1.id, {
      id: 'p-2',
      amount: 1,
      pixels: Buffer.alloc(0),
    });
    const asV2 = (await registry.decode(old, {
      [SchemaType.AVRO]: { readerSchema: await registry.getSchema(v2.id) },
    })) as Record<string, unknown>;
    expect(asV2).toEqual({ id: 'p-2', amount: 1, pixels: Buffer.alloc(0), currency: null });

    // A new required field (no default): v2 readers could not read v1 data. Refused.
    const incompatible = {
      ...schemaV2,
      fields: [...schemaV2.fields, { name: 'merchant', type: 'string' }],
    };
    const err: unknown = await registry
      .register(avro(incompatible), { subject })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(Error);
    expect((err as { status?: number }).status).toBe(409);
    expect(await registry.getLatestSchemaId(subject)).toBe(v2.id);

    const versions = await fetch(`${url}/subjects/${encodeURIComponent(subject)}/versions`);
    expect(await versions.json()).toEqual([1, 2]);
  });
});
