/**
 * One codec per request topic, from the configuration: raw Avro or the Confluent wire format
 * (registry.framed), and the InferenceRequest schema or a domain record through a field mapping
 * (mappings.byTopic). The worker sees `RequestCodecs`; clients and the CLI see `ClientCodec`.
 *
 * Framed requests are read with their writer schema (fetched by id, cached) resolved to the
 * reader schema (avsc resolvers), which is what lets producers evolve their schemas under the
 * registry's compatibility rules without restarting the worker.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import type avro from 'avsc';
import type { StreamscoreConfig } from '../config/schema.js';
import { StreamscoreError } from '../errors.js';
import type { ModelInfo } from '../model/types.js';
import type { Logger } from '../telemetry/logger.js';
import { AvroCodec } from './avro.js';
import { FieldMapping } from './mapping.js';
import {
  ConfluentSchemaRegistry,
  CONFLUENT_HEADER_BYTES,
  CONFLUENT_MAGIC,
  frame,
  framedSchemaId,
  type SchemaRegistryClient,
} from './registry.js';
import type { InferenceRequest, InferenceResult, RequestCodecs, TopicCodec } from './types.js';

/** An id the registry did not know is asked again after this long (it may have been registered since). */
const UNKNOWN_ID_RETRY_MS = 60_000;

/** What a producer or consumer of one request topic needs (ScoringClient, the CLI). */
export interface ClientCodec {
  readonly topic: string;
  readonly resultTopic: string;
  /** Request records on this topic: a domain record, or InferenceRequest. */
  readonly requestType: avro.Type;
  readonly resultType: avro.Type;
  /** The request field that is the correlation id ('id' for InferenceRequest). */
  readonly idField: string;
  /** Framed as configured; a framed topic's request schema is registered under <topic>-value. */
  encodeRequest(record: object): Promise<Buffer>;
  decodeResult(value: Buffer): Promise<Record<string, unknown>>;
}

/** Reads Avro values of one reader type, raw or framed (writer schema from the registry). */
class AvroReader {
  private readonly resolvers = new Map<
    number,
    avro.Resolver | { error: StreamscoreError; at: number }
  >();

  constructor(
    readonly type: avro.Type,
    private readonly registry: SchemaRegistryClient | null,
    private readonly label: string,
  ) {}

  get framed(): boolean {
    return this.registry !== null;
  }

  /** Schema ids of these values whose writer schema is not fetched yet. */
  missing(values: Iterable<Buffer>): Set<number> {
    const ids = new Set<number>();
    if (!this.registry) return ids;
    const now = Date.now();
    for (const value of values) {
      if (value.length < CONFLUENT_HEADER_BYTES || value[0] !== CONFLUENT_MAGIC) continue;
      const id = value.readInt32BE(1);
      const known = this.resolvers.get(id);
      if (known === undefined || ('error' in known && now - known.at > UNKNOWN_ID_RETRY_MS)) {
        ids.add(id);
      }
    }
    return ids;
  }

  /** Fetches a writer schema; REGISTRY_UNAVAILABLE propagates (the caller retries). */
  async load(id: number): Promise<void> {
    let writer: avro.Type;
    try {
      writer = await this.registry!.writerType(id);
    } catch (err) {
      if (err instanceof StreamscoreError && err.code === 'UNKNOWN_SCHEMA_ID') {
        this.resolvers.set(id, { error: err, at: Date.now() });
        return;
      }
      throw err;
    }
    try {
      this.resolvers.set(id, this.type.createResolver(writer));
    } catch (err) {
      this.resolvers.set(id, {
        error: new StreamscoreError(
          'SCHEMA_MISMATCH',
          `schema id ${id} cannot be read as ${this.label}: ${(err as Error).message}`,
          { cause: err, details: { schemaId: id } },
        ),
        at: Infinity,
      });
    }
  }

  read(value: Buffer): unknown {
    if (!this.registry) return this.type.fromBuffer(value);
    const id = framedSchemaId(value);
    const resolver = this.resolvers.get(id);
    if (resolver === undefined) {
      throw new StreamscoreError(
        'DECODE_FAILED',
        `schema id ${id} was not fetched before decoding`,
      );
    }
    if ('error' in resolver) throw resolver.error;
    return this.type.fromBuffer(value.subarray(CONFLUENT_HEADER_BYTES), resolver);
  }
}

function decodeFailed(what: string, err: unknown): StreamscoreError {
  if (err instanceof StreamscoreError) return err;
  return new StreamscoreError('DECODE_FAILED', `not ${what}: ${(err as Error).message}`, {
    cause: err,
  });
}

/** The codec of one request topic. */
export class ConfiguredTopicCodec implements TopicCodec {
  readonly reader: AvroReader;

  constructor(
    readonly topic: string,
    readonly resultTopic: string,
    private readonly standard: AvroCodec,
    readonly mapping: FieldMapping | null,
    registry: SchemaRegistryClient | null,
    /** Registered id of the result schema when the result topic is framed. */
    private readonly resultSchemaId: number | null,
  ) {
    this.reader = new AvroReader(
      mapping ? mapping.requestType : standard.types.request,
      registry,
      mapping ? `the mapping's request schema (${mapping.topic})` : 'an InferenceRequest',
    );
  }

  get requestType(): avro.Type {
    return this.reader.type;
  }

  get resultType(): avro.Type {
    return this.mapping ? this.mapping.resultType : this.standard.types.result;
  }

  decodeRequest(value: Buffer): InferenceRequest {
    const what = this.mapping
      ? `a ${this.requestType.name ?? 'request'} record`
      : 'an InferenceRequest';
    let record: unknown;
    try {
      record = this.reader.read(value);
    } catch (err) {
      throw decodeFailed(
        `${what} in Avro binary${this.reader.framed ? ' (Confluent-framed)' : ''}`,
        err,
      );
    }
    return this.mapping
      ? this.mapping.toRequest(record as Record<string, unknown>)
      : this.standard.requestFromValue(record);
  }

  encodeResult(result: InferenceResult, request: InferenceRequest, info: ModelInfo): Buffer {
    let payload: Buffer;
    try {
      payload = this.mapping
        ? this.mapping.resultType.toBuffer(this.mapping.toResult(result, request, info))
        : this.standard.types.result.toBuffer(this.standard.resultValue(result));
    } catch (err) {
      if (err instanceof StreamscoreError) throw err;
      throw new StreamscoreError(
        'ENCODE_FAILED',
        `cannot encode result: ${(err as Error).message}`,
        {
          cause: err,
        },
      );
    }
    return this.resultSchemaId === null ? payload : frame(this.resultSchemaId, payload);
  }
}

export interface TopicCodecsOptions {
  log?: Logger;
  /** The registry client; default: one for registry.url. Tests pass their own. */
  registry?: SchemaRegistryClient;
  /** Only what clients need: no result schema is registered (the worker does that). */
  forClient?: boolean;
}

/** Every request topic's codec, built from the configuration. */
export class TopicCodecs implements RequestCodecs {
  private constructor(
    private readonly byTopic: ReadonlyMap<string, ConfiguredTopicCodec>,
    private readonly retryMs: number,
    private readonly log: Logger | undefined,
  ) {}

  /**
   * Reads mapping schemas, checks framing has a registry, and registers the result schemas of
   * framed result topics (under <topic>-value). Config mistakes fail here naming the key.
   */
  static async create(
    config: StreamscoreConfig,
    options: TopicCodecsOptions = {},
  ): Promise<TopicCodecs> {
    const framed = new Set(config.registry.framed);
    const registry = options.registry ?? registryFor(config);
    if (framed.size > 0 && !registry) {
      throw new StreamscoreError(
        'CONFIG_INVALID',
        `registry.framed lists ${[...framed].join(', ')} but registry.url is not set. Fix: set registry.url (STREAMSCORE_REGISTRY_URL) to the Schema Registry's base URL.`,
        { details: { key: 'registry.url' } },
      );
    }
    const mappings = new Map<string, FieldMapping>();
    config.mappings.byTopic.forEach((entry, i) => {
      const key = `mappings.byTopic[${i}]`;
      if (!config.topics.requests.includes(entry.topic)) {
        throw new StreamscoreError(
          'CONFIG_INVALID',
          `${key}.topic "${entry.topic}" is not one of topics.requests (${config.topics.requests.join(', ')})`,
          { details: { key: `${key}.topic` } },
        );
      }
      if (mappings.has(entry.topic)) {
        throw new StreamscoreError(
          'CONFIG_INVALID',
          `${key}.topic "${entry.topic}" is mapped twice`,
          {
            details: { key: `${key}.topic` },
          },
        );
      }
      mappings.set(
        entry.topic,
        new FieldMapping(entry, readSchemaFile(entry.schema, `${key}.schema`), key),
      );
    });
    const standard = new AvroCodec({ resultFloatEncoding: config.output.floatEncoding });
    const resultIds = new Map<string, number>();
    const byTopic = new Map<string, ConfiguredTopicCodec>();
    for (const topic of config.topics.requests) {
      const mapping = mappings.get(topic) ?? null;
      const resultTopic = mapping?.resultTopicOr(config.topics.results) ?? config.topics.results;
      let resultId: number | null = null;
      if (framed.has(resultTopic) && !options.forClient) {
        const resultSchema = mapping
          ? mapping.resultSchema
          : (standard.types.result.schema() as avro.Schema);
        const subject = `${resultTopic}-value`;
        resultId = resultIds.get(subject) ?? (await registry!.register(subject, resultSchema));
        resultIds.set(subject, resultId);
        options.log?.info({ subject, schemaId: resultId }, 'result schema registered');
      }
      byTopic.set(
        topic,
        new ConfiguredTopicCodec(
          topic,
          resultTopic,
          standard,
          mapping,
          framed.has(topic) ? registry : null,
          resultId,
        ),
      );
    }
    return new TopicCodecs(byTopic, config.registry.retryMs, options.log);
  }

  forTopic(topic: string): ConfiguredTopicCodec {
    const codec = this.byTopic.get(topic);
    if (!codec) throw new StreamscoreError('DECODE_FAILED', `no codec for topic "${topic}"`);
    return codec;
  }

  /** The mappings, for checking them against every model version they can reach. */
  get mappings(): FieldMapping[] {
    return [...this.byTopic.values()].flatMap((c) => (c.mapping ? [c.mapping] : []));
  }

  /** Every topic results are written to. */
  get resultTopics(): string[] {
    return [...new Set([...this.byTopic.values()].map((c) => c.resultTopic))];
  }

  async prepare(
    records: readonly { topic: string; value: Buffer | null }[],
    abandon: () => boolean,
  ): Promise<void> {
    const wanted = new Map<ConfiguredTopicCodec, Set<number>>();
    for (const record of records) {
      const codec = this.byTopic.get(record.topic);
      if (!codec?.reader.framed || !record.value) continue;
      for (const id of codec.reader.missing([record.value])) {
        let ids = wanted.get(codec);
        if (!ids) wanted.set(codec, (ids = new Set()));
        ids.add(id);
      }
    }
    for (const [codec, ids] of wanted) {
      for (const id of ids) await this.loadRetrying(codec, id, abandon);
    }
  }

  private async loadRetrying(
    codec: ConfiguredTopicCodec,
    id: number,
    abandon: () => boolean,
  ): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      try {
        await codec.reader.load(id);
        if (attempt > 1)
          this.log?.info({ schemaId: id, attempt }, 'schema registry reachable again');
        return;
      } catch (err) {
        if (!(err instanceof StreamscoreError) || err.code !== 'REGISTRY_UNAVAILABLE') throw err;
        if (abandon()) throw err;
        if (attempt === 1 || attempt % 30 === 0) {
          this.log?.warn(
            { err, schemaId: id, topic: codec.topic, attempt, retryMs: this.retryMs },
            'schema registry unavailable: the batch waits and retries',
          );
        }
        await new Promise((resolve) => setTimeout(resolve, this.retryMs));
      }
    }
  }
}

/** The codec a client of `topic` needs; framed result values are read through the registry. */
export async function clientCodecFor(
  config: StreamscoreConfig,
  topic: string,
  options: { log?: Logger; registry?: SchemaRegistryClient } = {},
): Promise<ClientCodec> {
  if (!config.topics.requests.includes(topic)) {
    throw new StreamscoreError(
      'CONFIG_INVALID',
      `topic "${topic}" is not one of topics.requests (${config.topics.requests.join(', ')})`,
      { details: { key: 'topics.requests' } },
    );
  }
  const codecs = await TopicCodecs.create(config, { ...options, forClient: true });
  const codec = codecs.forTopic(topic);
  const framed = new Set(config.registry.framed);
  const registry = options.registry ?? registryFor(config);
  const resultReader = new AvroReader(
    codec.resultType,
    framed.has(codec.resultTopic) ? registry : null,
    'the result schema',
  );
  let requestId: Promise<number> | null = null;
  return {
    topic,
    resultTopic: codec.resultTopic,
    requestType: codec.requestType,
    resultType: codec.resultType,
    idField: codec.mapping?.idField ?? 'id',
    async encodeRequest(record: object): Promise<Buffer> {
      const payload = codec.requestType.toBuffer(record);
      if (!codec.reader.framed) return payload;
      // What a Confluent serializer does by default: register the writer schema, then frame.
      requestId ??= registry!.register(`${topic}-value`, codec.requestType.schema() as avro.Schema);
      return frame(await requestId, payload);
    },
    async decodeResult(value: Buffer): Promise<Record<string, unknown>> {
      const missing = resultReader.missing([value]);
      for (const id of missing) await resultReader.load(id);
      return resultReader.read(value) as Record<string, unknown>;
    },
  };
}

/** A client of registry.url, or null when none is configured. */
function registryFor(config: StreamscoreConfig): SchemaRegistryClient | null {
  const { url, username, password } = config.registry;
  return url ? new ConfluentSchemaRegistry({ url, username, password }) : null;
}

function readSchemaFile(file: string, key: string): avro.Schema {
  try {
    return JSON.parse(readFileSync(path.resolve(file), 'utf8')) as avro.Schema;
  } catch (err) {
    throw new StreamscoreError(
      'CONFIG_INVALID',
      `${key}: cannot read the Avro schema ${file}: ${(err as Error).message}. Fix: give the path of an .avsc file (relative to the working directory).`,
      { cause: err, details: { key } },
    );
  }
}
