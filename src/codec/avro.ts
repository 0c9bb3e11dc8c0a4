import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import avro from 'avsc';
import { StreamscoreError } from '../errors.js';
import { bytesFromFloats, copyableAsFloats, floatsFromBytes } from './floats.js';
import type {
  FloatEncoding,
  InferenceCodec,
  InferenceRequest,
  InferenceResult,
  NamedTensor,
} from './types.js';

/** schemas/ at the package root, next to src/ and dist/. */
export const SCHEMA_DIR = fileURLToPath(new URL('../../schemas/', import.meta.url));

export interface AvroSchemas {
  request: avro.Type;
  result: avro.Type;
}

/** The part of avsc's (internal, version-pinned) reading cursor the bytes reader below uses. */
interface AvscTap {
  buf: Buffer;
  pos: number;
  readLong(): number;
}

const AvscBytesType = (avro.types as unknown as { BytesType: new () => avro.Type }).BytesType;

/**
 * avsc copies every `bytes` value into a pool of its own (Tap#readFixed). This reader returns a
 * view into the record instead, so float32 tensor bytes are copied only once, into the batch.
 */
class BytesViewType extends AvscBytesType {
  _read(tap: AvscTap): Buffer | undefined {
    const length = tap.readLong();
    const start = tap.pos;
    tap.pos += length;
    // A negative or overlong length leaves the tap invalid; avsc then reports a truncated buffer.
    if (length < 0 || tap.pos > tap.buf.length) {
      tap.pos = tap.buf.length + 1;
      return undefined;
    }
    return tap.buf.subarray(start, tap.pos);
  }
}

/** Parses schemas/*.avsc once; the request and result share the Tensor record. */
export function loadSchemas(dir: string = SCHEMA_DIR): AvroSchemas {
  const registry: Record<string, avro.Type> = {};
  const read = (file: string) =>
    avro.Type.forSchema(JSON.parse(readFileSync(`${dir}/${file}`, 'utf8')) as avro.Schema, {
      registry,
      wrapUnions: 'auto',
      typeHook: (schema) => (schema === 'bytes' ? new BytesViewType() : undefined),
    });
  read('tensor.avsc');
  return { request: read('inference-request.avsc'), result: read('inference-result.avsc') };
}

interface WireTensor {
  name: string;
  shape: number[];
  data: Buffer | number[];
}

function tensorFromWire(tensor: WireTensor): NamedTensor {
  const { name, shape, data } = tensor;
  if (!Buffer.isBuffer(data)) return { name, shape, data: Float32Array.from(data) };
  if (data.length % 4 !== 0 || !copyableAsFloats(data)) {
    return { name, shape, data: floatsFromBytes(data) }; // a view, a conversion, or DECODE_FAILED
  }
  // Unaligned: keep the bytes; a Float32Array copy is made only if someone asks for `data`.
  let floats: Float32Array | undefined;
  return {
    name,
    shape,
    raw: data,
    get data() {
      floats ??= floatsFromBytes(data);
      return floats;
    },
  };
}

function tensorToWire(tensor: NamedTensor, encoding: FloatEncoding): WireTensor {
  return {
    name: tensor.name,
    shape: tensor.shape,
    data: encoding === 'bytes' ? bytesFromFloats(tensor.data) : Array.from(tensor.data),
  };
}

export interface AvroCodecOptions {
  /** How result tensors are written (requests keep whatever the caller chose). */
  resultFloatEncoding?: FloatEncoding;
  schemas?: AvroSchemas;
}

/** Raw (unframed) Avro binary, the schemas in schemas/. */
export class AvroCodec implements InferenceCodec {
  private readonly schemas: AvroSchemas;
  private readonly resultEncoding: FloatEncoding;

  constructor(options: AvroCodecOptions = {}) {
    this.schemas = options.schemas ?? loadSchemas();
    this.resultEncoding = options.resultFloatEncoding ?? 'array';
  }

  get types(): AvroSchemas {
    return this.schemas;
  }

  decodeRequest(value: Buffer): InferenceRequest {
    let wire: unknown;
    try {
      // fromBuffer also rejects trailing bytes, which catches most wrong-schema payloads.
      wire = this.schemas.request.fromBuffer(value);
    } catch (err) {
      throw new StreamscoreError(
        'DECODE_FAILED',
        `not an InferenceRequest in Avro binary: ${(err as Error).message}`,
        { cause: err },
      );
    }
    return this.requestFromValue(wire);
  }

  /** An InferenceRequest record as avsc read it (with any resolver) → the worker's request. */
  requestFromValue(value: unknown): InferenceRequest {
    const wire = value as Omit<InferenceRequest, 'inputs'> & { inputs: WireTensor[] };
    return {
      id: wire.id,
      model: wire.model,
      modelVersion: wire.modelVersion,
      requestedAt: wire.requestedAt,
      inputs: wire.inputs.map(tensorFromWire),
    };
  }

  encodeRequest(request: InferenceRequest, encoding: FloatEncoding = 'bytes'): Buffer {
    return this.schemas.request.toBuffer({
      ...request,
      inputs: request.inputs.map((t) => tensorToWire(t, encoding)),
    });
  }

  encodeResult(result: InferenceResult): Buffer {
    try {
      return this.schemas.result.toBuffer(this.resultValue(result));
    } catch (err) {
      throw new StreamscoreError(
        'ENCODE_FAILED',
        `cannot encode result: ${(err as Error).message}`,
        {
          cause: err,
        },
      );
    }
  }

  /** The result as the InferenceResult record's Avro value. */
  resultValue(result: InferenceResult): unknown {
    return {
      ...result,
      outputs: result.outputs.map((t) => tensorToWire(t, this.resultEncoding)),
    };
  }

  decodeResult(value: Buffer): InferenceResult {
    const wire = this.schemas.result.fromBuffer(value) as Omit<InferenceResult, 'outputs'> & {
      outputs: WireTensor[];
    };
    return { ...wire, outputs: wire.outputs.map(tensorFromWire) };
  }
}
