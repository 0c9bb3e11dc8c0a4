export * from './types.js';
export { AvroCodec, loadSchemas, SCHEMA_DIR, type AvroSchemas } from './avro.js';
export { floatsFromBytes, bytesFromFloats } from './floats.js';
export { toExample } from './examples.js';
