import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import avro from 'avsc';
import { StreamscoreError } from '../errors.js';
import { bytesFromFloats, floatsFromBytes } from './floats.js';
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

/** Parses schemas/*.avsc once; the request and result share the Tensor record. */
export function loadSchemas(dir: string = SCHEMA_DIR): AvroSchemas {
  const registry: Record<string, avro.Type> = {};
  const read = (file: string) =>
    avro.Type.forSchema(JSON.parse(readFileSync(`${dir}/${file}`, 'utf8')) as avro.Schema, {
      registry,
      wrapUnions: 'auto',
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
  const data = Buffer.isBuffer(tensor.data)
    ? floatsFromBytes(tensor.data)
    : Float32Array.from(tensor.data);
  return { name: tensor.name, shape: tensor.shape, data };
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

  decodeRequest(value: Buffer): InferenceRequest {
    let wire: Omit<InferenceRequest, 'inputs'> & { inputs: WireTensor[] };
    try {
      // fromBuffer also rejects trailing bytes, which catches most wrong-schema payloads.
      wire = this.schemas.request.fromBuffer(value) as typeof wire;
    } catch (err) {
      throw new StreamscoreError(
        'DECODE_FAILED',
        `not an InferenceRequest in Avro binary: ${(err as Error).message}`,
        { cause: err },
      );
    }
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
      return this.schemas.result.toBuffer({
        ...result,
        outputs: result.outputs.map((t) => tensorToWire(t, this.resultEncoding)),
      });
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

  decodeResult(value: Buffer): InferenceResult {
    const wire = this.schemas.result.fromBuffer(value) as Omit<InferenceResult, 'outputs'> & {
      outputs: WireTensor[];
    };
    return { ...wire, outputs: wire.outputs.map(tensorFromWire) };
  }
}
