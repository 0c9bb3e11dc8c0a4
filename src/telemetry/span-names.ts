/** streamscore's own span attributes; README's "Traces" table lists the same. */
export const SPAN_ATTRIBUTE = {
  queueWaitMs: 'streamscore.queue_wait_ms',
  batchWaitMs: 'streamscore.batch_wait_ms',
  inferenceMs: 'streamscore.inference_ms',
  batchSize: 'streamscore.batch.size',
  batchSpanId: 'streamscore.batch.span_id',
  model: 'streamscore.model.name',
  modelVersion: 'streamscore.model.version',
  backend: 'streamscore.model.backend',
  outcome: 'streamscore.outcome',
  errorCode: 'streamscore.error.code',
} as const;
