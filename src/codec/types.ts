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
