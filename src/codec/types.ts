import type { ModelInfo } from '../model/types.js';

/** Decoded messages as the worker core sees them: float32 data is always a Float32Array. */

export interface NamedTensor {
  name: string;
  /** Shape of one example, without the batch dimension. */
  shape: number[];
  data: Float32Array;
  /**
   * The little-endian float32 bytes as they arrived, when they could not be viewed as a
   * Float32Array in place (not 4-byte aligned in the record). The worker validates and packs
   * these directly, so the values are copied once, into the batch; `data` is then made on demand.
   */
  raw?: Buffer;
}

export interface InferenceRequest {
  id: string;
  model: string | null;
  modelVersion: string | null;
  /** Epoch milliseconds, or null when the caller did not say. */
  requestedAt: number | null;
  inputs: NamedTensor[];
  /** A mapped request (config mappings.byTopic): the domain record as read. */
  fields?: Record<string, unknown>;
  /** A mapped request: makes `inputs` once the model version that scores it is known. */
  mapping?: RequestMapping;
}

/** See src/codec/mapping.ts. */
export interface RequestMapping {
  inputsFor(request: InferenceRequest, info: ModelInfo): NamedTensor[];
}

export interface InferenceResult {
  id: string;
  model: string;
  modelVersion: string;
  outputs: NamedTensor[];
  label: string | null;
  labelIndex: number | null;
  score: number | null;
  requestedAt: number;
  receivedAt: number;
  inferredAt: number;
  sentAt: number;
}

export type FloatEncoding = 'array' | 'bytes';

/** The codec edge: swap Avro for another wire format (or Schema Registry framing) behind it. */
export interface InferenceCodec {
  decodeRequest(value: Buffer): InferenceRequest;
  encodeRequest(request: InferenceRequest, encoding?: FloatEncoding): Buffer;
  encodeResult(result: InferenceResult): Buffer;
  decodeResult(value: Buffer): InferenceResult;
}

/** How the worker reads one request topic and writes its results (see src/codec/topics.ts). */
export interface TopicCodec {
  readonly topic: string;
  /** Where results of this topic's requests go. */
  readonly resultTopic: string;
  /** Synchronous once `RequestCodecs.prepare` has seen the record (writer schemas fetched). */
  decodeRequest(value: Buffer): InferenceRequest;
  encodeResult(result: InferenceResult, request: InferenceRequest, info: ModelInfo): Buffer;
}

export interface RequestCodecs {
  forTopic(topic: string): TopicCodec;
  /** Every topic results are written to (besides the worker's options.resultTopic). */
  readonly resultTopics?: readonly string[];
  /**
   * Fetches what decoding these records needs (writer schemas of Confluent-framed records) and
   * waits, retrying, while the registry cannot be reached; gives up only when `abandon()` turns
   * true (the partition was revoked or the worker stops).
   */
  prepare?(
    records: readonly { topic: string; value: Buffer | null }[],
    abandon: () => boolean,
  ): Promise<void>;
}
