/**
 * TEMPORARY — stands in for `clientCodecFor` from src/codec/topics.ts until that module lands;
 * then every import of this file switches to it and this file is deleted. It covers only the
 * standard schemas (schemas/inference-*.avsc, raw Avro, no Schema Registry framing, no domain
 * mappings): the contract below is copied from the one src/codec/topics.ts will export.
 */
import type avro from 'avsc';
import { loadSchemas } from '../codec/avro.js';
import type { StreamscoreConfig } from '../config/schema.js';
import type { Logger } from '../telemetry/logger.js';

export interface ClientCodec {
  readonly topic: string;
  readonly resultTopic: string;
  readonly requestType: avro.Type;
  readonly resultType: avro.Type;
  readonly idField: string;
  encodeRequest(record: object): Promise<Buffer>;
  decodeResult(value: Buffer): Promise<Record<string, unknown>>;
}

export async function clientCodecFor(
  config: StreamscoreConfig,
  topic: string,
  _opts: { log?: Logger } = {},
): Promise<ClientCodec> {
  const { request, result } = loadSchemas();
  return {
    topic,
    resultTopic: config.topics.results,
    requestType: request,
    resultType: result,
    idField: 'id',
    encodeRequest: async (record) => request.toBuffer(record),
    decodeResult: async (value) => result.fromBuffer(value) as Record<string, unknown>,
  };
}
