/** streamscore as a library: the same pieces the CLI wires together. */
export { startService, type Service, type StartServiceOptions } from './service.js';
export {
  loadConfig,
  configSchema,
  configKeys,
  type StreamscoreConfig,
  type ConfigInput,
} from './config/index.js';
export {
  AvroCodec,
  loadSchemas,
  toExample,
  type InferenceCodec,
  type InferenceRequest,
  type InferenceResult,
  type NamedTensor,
  type FloatEncoding,
} from './codec/index.js';
export { InferenceWorker, type WorkerOptions, type StopReport } from './worker/worker.js';
export { HEADER } from './worker/headers.js';
export { BatchPolicy, BatchDriver, systemClock, type Clock } from './batching/index.js';
export { selectBackend } from './model/backend.js';
export { loadModel, resolveModelDir } from './model/repository.js';
export type { ModelRunner, ModelInfo, TensorSpec, PackedBatch } from './model/types.js';
export type { RecordSource, RecordSink, InboundRecord, OutboundRecord } from './kafka/types.js';
export { KafkajsSource, KafkajsSink, createKafka, ensureTopics } from './kafka/kafkajs.js';
export { StreamscoreError, type ErrorCode, type ErrorCategory } from './errors.js';
export * from './client/index.js';
export { clientCodecFor, TopicCodecs, type ClientCodec } from './codec/topics.js';
