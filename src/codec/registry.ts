/**
 * The Schema Registry edge: writer schemas by id and result schemas registered by subject, over
 * the Confluent REST API (Confluent Schema Registry, Apicurio's ccompat API, Karapace), through
 * @kafkajs/confluent-schema-registry. Its errors become typed ones: an id the registry does not
 * know is the record's fault (dead-lettered); an unreachable registry is ours (retried).
 */
import { SchemaRegistry } from '@kafkajs/confluent-schema-registry';
import type avro from 'avsc';
import { StreamscoreError } from '../errors.js';

/** Confluent wire format: magic byte 0, then the schema id as a big-endian int32, then Avro. */
export const CONFLUENT_MAGIC = 0;
export const CONFLUENT_HEADER_BYTES = 5;

export interface SchemaRegistryClient {
  /** The writer schema of `id`. Throws UNKNOWN_SCHEMA_ID or REGISTRY_UNAVAILABLE (retriable). */
  writerType(id: number): Promise<avro.Type>;
  /** Registers `schema` under `subject` (or finds it registered) and returns its id. */
  register(subject: string, schema: avro.Schema): Promise<number>;
}

export interface RegistrySettings {
  url: string;
  username?: string | null;
  password?: string | null;
}

/** The schema id of a Confluent-framed value, or DECODE_FAILED when it is not framed. */
export function framedSchemaId(value: Buffer): number {
  if (value.length < CONFLUENT_HEADER_BYTES || value[0] !== CONFLUENT_MAGIC) {
    throw new StreamscoreError(
      'DECODE_FAILED',
      `record is not in the Confluent wire format (expected magic byte 0 and a 4-byte schema id, got ${value.length} byte(s) starting 0x${value.subarray(0, 1).toString('hex')})`,
    );
  }
  return value.readInt32BE(1);
}

export function frame(id: number, payload: Buffer): Buffer {
  const out = Buffer.allocUnsafe(CONFLUENT_HEADER_BYTES + payload.length);
  out[0] = CONFLUENT_MAGIC;
  out.writeInt32BE(id, 1);
  payload.copy(out, CONFLUENT_HEADER_BYTES);
  return out;
}

/** The part of @kafkajs/confluent-schema-registry's (mappersmith) API client used here. */
interface SubjectApi {
  Subject: {
    register(args: {
      subject: string;
      body: { schema: string };
    }): Promise<{ data(): { id: number } }>;
  };
}

interface ResponseErrorLike {
  status?: number;
  message?: string;
}

export class ConfluentSchemaRegistry implements SchemaRegistryClient {
  private readonly client: SchemaRegistry;
  private readonly url: string;

  constructor(settings: RegistrySettings) {
    this.url = settings.url;
    this.client = new SchemaRegistry({
      host: settings.url,
      clientId: 'streamscore',
      // Retries are ours (registry.retryMs, while the batch waits); the client's would stall it.
      retry: { retries: 0 },
      ...(settings.username
        ? { auth: { username: settings.username, password: settings.password ?? '' } }
        : {}),
    });
  }

  async writerType(id: number): Promise<avro.Type> {
    try {
      return (await this.client.getSchema(id)) as unknown as avro.Type;
    } catch (err) {
      const status = (err as ResponseErrorLike).status;
      if (status === 404) {
        throw new StreamscoreError(
          'UNKNOWN_SCHEMA_ID',
          `schema id ${id} is not in the registry at ${this.url}`,
          { cause: err, details: { schemaId: id } },
        );
      }
      throw this.unavailable(`fetching schema id ${id}`, err);
    }
  }

  async register(subject: string, schema: avro.Schema): Promise<number> {
    try {
      // Not client.register(): that refuses unless the subject's compatibility level equals its
      // own option (BACKWARD by default) and sets that level on a new subject, so it would fail
      // on subjects configured otherwise and change users' registry settings. The same client's
      // request for POST /subjects/{subject}/versions (pinned version) registers and nothing else.
      const api = (this.client as unknown as { api: SubjectApi }).api;
      const response = await api.Subject.register({
        subject,
        body: { schema: JSON.stringify(schema) },
      });
      return response.data().id;
    } catch (err) {
      const status = (err as ResponseErrorLike).status;
      if (status === 409 || status === 422) {
        throw new StreamscoreError(
          'CONFIG_INVALID',
          `the registry at ${this.url} refused the result schema for subject "${subject}": ${(err as Error).message}. Fix: make the result schema compatible with the subject's latest version, or change the subject's compatibility.`,
          { cause: err, details: { key: 'registry.framed', subject } },
        );
      }
      throw this.unavailable(`registering subject "${subject}"`, err);
    }
  }

  private unavailable(what: string, err: unknown): StreamscoreError {
    const status = (err as ResponseErrorLike).status;
    const hint =
      status === 401 || status === 403 ? ' (check registry.username and registry.password)' : '';
    return new StreamscoreError(
      'REGISTRY_UNAVAILABLE',
      `Schema Registry at ${this.url} failed ${what}: ${(err as Error).message}${hint}`,
      { cause: err, retriable: true, details: { url: this.url, status } },
    );
  }
}
