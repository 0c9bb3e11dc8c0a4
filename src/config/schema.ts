import { z } from 'zod';

/**
 * The one configuration object. Every key has a default except the broker list, so a worker
 * starts from a file of a few lines or from environment variables alone (docker-compose).
 * Descriptions feed config/README.md (scripts/config-docs.ts) and error messages.
 */

const hostPort = z
  .string()
  .regex(/^[^\s:,]+:\d{1,5}$/, 'expected host:port, e.g. 127.0.0.1:9092')
  .describe('host:port');

const topicName = z
  .string()
  .regex(/^[a-zA-Z0-9._-]{1,249}$/, 'expected a Kafka topic name: letters, digits, ".", "_", "-"')
  .describe('topic name');

export const backendPreferences = ['auto', 'tensorflow-gpu', 'tensorflow', 'wasm', 'cpu'] as const;

const identifier = z
  .string()
  .regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'expected an Avro name: letters, digits, "_"')
  .describe('Avro field name');

/** One column group of the model input, read from one field of the request record. */
const inputMapping = z
  .object({
    field: identifier,
    feature: z.string().min(1).optional(),
    mean: z.number().optional(),
    std: z.number().positive().optional(),
    vocabulary: z.array(z.string().min(1)).min(1).optional(),
    ifNull: z.number().optional(),
  })
  .strict();

/** One field of the result record, made from the model output. */
const outputMapping = z.discriminatedUnion('kind', [
  z.object({ name: identifier, kind: z.literal('label') }).strict(),
  z
    .object({
      name: identifier,
      kind: z.literal('score'),
      label: z.string().min(1).optional(),
    })
    .strict(),
  z.object({ name: identifier, kind: z.literal('topK'), k: z.number().int().min(1) }).strict(),
  z
    .object({
      name: identifier,
      kind: z.literal('threshold'),
      label: z.string().min(1),
      threshold: z.number(),
    })
    .strict(),
  z.object({ name: identifier, kind: z.literal('scores') }).strict(),
]);

const fieldMapping = z
  .object({
    topic: topicName,
    schema: z.string().min(1),
    id: identifier.default('id'),
    model: z.string().min(1).optional(),
    input: z.string().min(1).optional(),
    inputs: z.array(inputMapping).min(1).optional(),
    output: z.string().min(1).optional(),
    result: z
      .object({
        topic: topicName.optional(),
        name: identifier.optional(),
        fields: z.array(outputMapping).min(1),
        copy: z.array(identifier).default([]),
      })
      .strict(),
  })
  .strict()
  .describe('mapping');

export type FieldMappingConfig = z.infer<typeof fieldMapping>;
export type InputMappingConfig = z.infer<typeof inputMapping>;
export type OutputMappingConfig = z.infer<typeof outputMapping>;

export const configSchema = z
  .object({
    kafka: z
      .object({
        brokers: z
          .array(hostPort)
          .default([])
          .describe(
            'Bootstrap brokers (comma-separated in the environment). Required by `streamscore run`; the demo starts a local broker when empty.',
          ),
        clientId: z.string().min(1).default('streamscore').describe('Kafka client id.'),
        groupId: z
          .string()
          .min(1)
          .default('streamscore')
          .describe('Consumer group: workers with the same group share the request partitions.'),
        connectionTimeoutMs: z
          .number()
          .int()
          .min(100)
          .default(3000)
          .describe('Time to wait for a broker connection.'),
        requestTimeoutMs: z
          .number()
          .int()
          .min(100)
          .default(30000)
          .describe('Time to wait for a broker response.'),
        sessionTimeoutMs: z
          .number()
          .int()
          .min(6000)
          .default(30000)
          .describe('Group session timeout: a worker silent this long is removed from the group.'),
        fetchMaxWaitMs: z
          .number()
          .int()
          .min(10)
          .max(30000)
          .default(100)
          .describe(
            'Longest time a fetch waits on the broker when there is nothing to read. kafkajs also sleeps this long when every partition is paused, so it bounds how late fetching resumes after backpressure and how long stopping waits.',
          ),
        fetchMaxBytesPerPartition: z
          .number()
          .int()
          .min(1024)
          .default(1_048_576)
          .describe(
            'Most bytes one fetch returns per partition. Keep batching.maxQueued well above what one fetch of all partitions holds, or fetching pauses on every fetch.',
          ),
        maxSendBytes: z
          .number()
          .int()
          .min(1024)
          .default(524288)
          .describe(
            'Results waiting while a send is in flight are coalesced into one produce request up to this size (keep it under the broker message.max.bytes).',
          ),
        maxRecordBytes: z
          .number()
          .int()
          .min(1024)
          .default(1_000_000)
          .describe(
            "Largest result or dead letter sent (key, value and headers). A larger result is dead-lettered as KAFKA_RECORD_REJECTED and a larger dead letter is sent without its value, instead of the broker refusing them. Keep it under the broker's and topics' max.message.bytes.",
          ),
        compression: z
          .enum(['none', 'gzip'])
          .default('none')
          .describe('Compression of produced results and dead letters.'),
        fromBeginning: z
          .boolean()
          .default(true)
          .describe('Where a new group starts on a partition without a committed offset.'),
      })
      .strict()
      .prefault({}),
    topics: z
      .object({
        requests: z
          .array(topicName)
          .min(1)
          .default(['streamscore.requests'])
          .describe('Request topics to consume (comma-separated in the environment).'),
        results: topicName.default('streamscore.results').describe('Topic for predictions.'),
        deadLetter: topicName
          .default('streamscore.dead-letter')
          .describe(
            'Topic for records that could not be answered, with the reason in headers (streamscore.error.category: unprocessable or failed).',
          ),
        failed: topicName
          .nullable()
          .default(null)
          .describe(
            'Separate topic for the "failed" category (the model or the output step failed for that input). null: failed records go to topics.deadLetter too, told apart by the category header.',
          ),
        shadow: topicName
          .nullable()
          .default(null)
          .describe(
            "Where the candidate's results of shadowed requests go (model.canary.shadow > 0), never to topics.results; best effort (not retried, not part of the offset commit). null: shadow results are compared and counted, not written.",
          ),
        events: topicName
          .nullable()
          .default(null)
          .describe(
            'Rollout events (a candidate rolled back or promoted) as JSON records, keyed by model name. null: they are logged and counted only.',
          ),
      })
      .strict()
      .prefault({}),
    registry: z
      .object({
        url: z
          .string()
          .regex(/^https?:\/\/\S+$/, 'expected an http(s) URL')
          .nullable()
          .default(null)
          .describe(
            "Base URL of a Confluent-compatible Schema Registry (Confluent, or Apicurio's /apis/ccompat/v7). Needed by registry.framed topics. null: no registry; every topic is raw Avro.",
          ),
        username: z
          .string()
          .min(1)
          .nullable()
          .default(null)
          .describe('HTTP basic-auth user for the registry. null: no authentication.'),
        password: z
          .string()
          .nullable()
          .default(null)
          .describe('HTTP basic-auth password for the registry (redacted in logs).'),
        framed: z
          .array(topicName)
          .default([])
          .describe(
            "Topics whose records use the Confluent wire format (magic byte 0, 4-byte schema id, Avro). A request topic listed here is decoded with the writer schema fetched from the registry by id (cached) and resolved to the reader schema, so producers may evolve their schemas under the registry's compatibility rules. A result topic listed here is written framed, with its schema registered at start under <topic>-value. Topics not listed are raw Avro.",
          ),
        retryMs: z
          .number()
          .int()
          .min(10)
          .default(1000)
          .describe(
            'While the registry cannot be reached, fetching a writer schema is retried this often (the batch waits; nothing is dead-lettered for an unreachable registry). An id the registry does not know is dead-lettered as UNKNOWN_SCHEMA_ID.',
          ),
      })
      .strict()
      .prefault({}),
    mappings: z
      .object({
        byTopic: z
          .array(fieldMapping)
          .default([])
          .describe(
            'Domain-field mappings, one per request topic: requests on that topic are domain records (e.g. a payment) turned into the model input, and results are records with the fields asked for (label, scores, top-k, thresholds). In a file as YAML; in the environment as JSON. Fields: docs/mapping.md.',
          ),
      })
      .strict()
      .prefault({}),
    model: z
      .object({
        repository: z
          .string()
          .min(1)
          .default('models')
          .describe(
            'Model repository folder: <repository>/<name>/<version>/ (relative to the working directory).',
          ),
        name: z.string().min(1).default('digits').describe('Model served by default.'),
        version: z
          .string()
          .regex(/^(latest|\d+)$/, 'expected "latest" or a version number')
          .default('latest')
          .describe('"latest" (highest numeric version) or a pinned version.'),
        versions: z
          .array(z.string().regex(/^\d+$/, 'expected a version number'))
          .default([])
          .describe(
            'More versions of model.name served side by side, loaded at start: a request naming one (modelVersion) gets it; requests naming no version get model.version.',
          ),
        additional: z
          .array(
            z
              .string()
              .regex(
                /^[A-Za-z0-9._-]+(@(latest|\d+))?$/,
                'expected <name> or <name>@<version|latest>',
              ),
          )
          .default([])
          .describe(
            'More models served by this worker, as <name> or <name>@<version> (default latest, resolved at start; not watched). Requests get one by naming it (model) or through model.byTopic.',
          ),
        byTopic: z
          .array(z.string().regex(/^[^=\s]+=[^=\s]+$/, 'expected <topic>=<model name>'))
          .default([])
          .describe(
            'Default model per request topic, as <topic>=<model name>: requests on that topic naming no model get that model (model.name or one of model.additional).',
          ),
        watch: z
          .boolean()
          .default(true)
          .describe(
            'With version "latest": watch <repository>/<name>/ and hot-swap a new version in once it is loaded and warm (POST /models/reload asks too). false: only POST /models/reload.',
          ),
        replicas: z
          .union([z.literal('auto'), z.number().int().min(0).max(64)], {
            error: 'expected "auto" or a whole number from 0 to 64',
          })
          .default('auto')
          .describe(
            'Model replicas, each in its own worker thread, so inference never blocks Kafka I/O. auto: one per core but one (at least 1). 0: run the model on the main thread.',
          ),
        canary: z
          .object({
            version: z
              .string()
              .regex(/^\d+$/, 'expected a version number')
              .describe('version number (a folder under <name>/)'),
            fraction: z
              .number()
              .min(0)
              .max(1)
              .describe(
                'model.canary (default null, no canary) is { version, fraction, shadow, rollback, promoteAfter }: the candidate version of the same model, loaded and warmed at start, answers the share `fraction` of record keys (by a stable key hash); all other keys get model.version.',
              ),
            shadow: z
              .number()
              .min(0)
              .max(1)
              .default(0)
              .describe(
                'Share of the keys answered by model.version that the candidate also scores, for comparison only (top-1 agreement, score difference, errors, latency); its results go to topics.shadow.',
              ),
            rollback: z
              .object({
                maxErrorRate: z
                  .number()
                  .min(0)
                  .max(1)
                  .default(0.05)
                  .describe(
                    'Candidate requests that fail ÷ candidate requests above which it is rolled back.',
                  ),
                minAgreement: z
                  .number()
                  .min(0)
                  .max(1)
                  .nullable()
                  .default(0.9)
                  .describe(
                    'Shadowed requests where both versions pick the same top-1 label ÷ those compared, below which the candidate is rolled back. null: not judged.',
                  ),
                maxLatencyRatio: z
                  .number()
                  .positive()
                  .nullable()
                  .default(null)
                  .describe(
                    "Candidate's inference time per request ÷ the stable version's on calls of the same size class (a power of two), above which it is rolled back. null (default): not judged; under load the calls of a small canary share are rarely the size of the stable version's, so set it with a shadow share or at moderate load.",
                  ),
                minRequests: z
                  .number()
                  .int()
                  .min(1)
                  .default(200)
                  .describe(
                    'Requests the candidate must have scored (and compared, for agreement) before it is judged.',
                  ),
              })
              .strict()
              .nullable()
              .prefault({})
              .describe(
                'Thresholds of the automatic rollback; null: never rolled back automatically.',
              ),
            promoteAfter: z
              .number()
              .int()
              .min(1)
              .nullable()
              .default(null)
              .describe(
                'Promote the candidate automatically once it has scored this many requests without crossing a rollback threshold. null: only by hand (POST /models/promote, streamscore models promote).',
              ),
          })
          .strict()
          .nullable()
          .default(null)
          .describe(
            'Canary by key hash: also load this version and score the keys whose stable hash (FNV-1a 32 + fmix32 of the key bytes → [0,1); no key: the request id) is below fraction with it, all others with model.version. null: no canary. A canary that fails to load stops the start.',
          ),
        backend: z
          .enum(backendPreferences)
          .default('auto')
          .describe(
            'TensorFlow.js backend. auto tries tensorflow-gpu (CUDA), tensorflow (native CPU), wasm, cpu, in that order.',
          ),
      })
      .strict()
      .prefault({}),
    batching: z
      .object({
        maxBatchSize: z
          .number()
          .int()
          .min(1)
          .max(4096)
          .default(128)
          .describe(
            'Largest number of requests in one model call; with autotune, the upper bound of the sizes tried.',
          ),
        autotune: z
          .boolean()
          .default(true)
          .describe(
            'At warm-up, measure the model at batch sizes 1, 2, 4 … maxBatchSize and use the largest one within latencyBudgetMs whose throughput is within 10 % of the best (a larger limit costs nothing at light load and lets the worker catch up under a backlog). false: use maxBatchSize.',
          ),
        latencyBudgetMs: z
          .number()
          .min(0.1)
          .max(60000)
          .default(20)
          .describe('Longest batch inference time autotune accepts (p50 per batch).'),
        maxBatchBytes: z
          .number()
          .int()
          .min(1024)
          .default(8_388_608)
          .describe(
            'A batch is also cut once its requests add up to this many bytes (record values).',
          ),
        maxDelayMs: z
          .number()
          .min(0)
          .max(60000)
          .default(5)
          .describe('Longest time the oldest waiting request waits for a batch to fill.'),
        maxQueued: z
          .number()
          .int()
          .min(1)
          .default(16384)
          .describe(
            'Unanswered requests (read, not yet acknowledged) at which fetching pauses; it resumes at half. Bounds memory under overload.',
          ),
      })
      .strict()
      .prefault({}),
    limits: z
      .object({
        maxPayloadBytes: z
          .number()
          .int()
          .min(64)
          .default(1_048_576)
          .describe(
            'Larger request records are dead-lettered as PAYLOAD_TOO_LARGE without decoding.',
          ),
      })
      .strict()
      .prefault({}),
    output: z
      .object({
        floatEncoding: z
          .enum(['array', 'bytes'])
          .default('array')
          .describe('How result tensors are written: array<float> or little-endian float32 bytes.'),
      })
      .strict()
      .prefault({}),
    delivery: z
      .object({
        mode: z
          .enum(['at-least-once', 'exactly-once'])
          .default('at-least-once')
          .describe(
            'at-least-once: offsets are committed once results are acknowledged; a crash can repeat answers. exactly-once: results, dead letters and offsets commit in one Kafka transaction per input partition; readers must use isolation.level=read_committed.',
          ),
        transactionalIdPrefix: z
          .string()
          .regex(/^[a-zA-Z0-9._-]{1,200}$/, 'expected letters, digits, ".", "_", "-"')
          .nullable()
          .default(null)
          .describe(
            'exactly-once only: transactional ids are <prefix>.<topic>.<partition>, one per input partition, which fences a worker that lost the partition. null: kafka.groupId.',
          ),
        maxAttempts: z
          .number()
          .int()
          .min(1)
          .max(100)
          .default(5)
          .describe(
            'A record whose model step fails in a retriable way (e.g. its replica crashed) this many times is dead-lettered with the attempt history, so one record cannot stall its partition.',
          ),
      })
      .strict()
      .prefault({}),
    commit: z
      .object({
        intervalMs: z
          .number()
          .int()
          .min(0)
          .default(500)
          .describe(
            "How often acknowledged offsets are committed (0: after every acknowledged send). In exactly-once mode, how often each partition's transaction commits: results become visible to read_committed readers then.",
          ),
      })
      .strict()
      .prefault({}),
    shutdown: z
      .object({
        drainTimeoutMs: z
          .number()
          .int()
          .min(0)
          .default(15000)
          .describe('On SIGTERM/SIGINT, time allowed to answer in-flight requests before exiting.'),
      })
      .strict()
      .prefault({}),
    telemetry: z
      .object({
        serviceName: z
          .string()
          .min(1)
          .default('streamscore')
          .describe("OpenTelemetry service.name of the worker's spans and metrics."),
        otlpEndpoint: z
          .string()
          .url('expected a URL such as http://localhost:4318')
          .nullable()
          .default(null)
          .describe(
            'OTLP/HTTP endpoint (e.g. http://localhost:4318 of a Collector or Jaeger): traces go to <endpoint>/v1/traces and metrics to <endpoint>/v1/metrics. null: nothing is exported over OTLP and tracing is off (no spans are made at all).',
          ),
        tracesSampleRatio: z
          .number()
          .min(0)
          .max(1)
          .default(1)
          .describe(
            'Share of traces recorded when otlpEndpoint is set (parent-based: a request whose producer sampled its trace is always recorded). 0 turns tracing off.',
          ),
        traceQueueSize: z
          .number()
          .int()
          .min(256)
          .default(16384)
          .describe(
            'Finished spans held for export. When the receiver cannot keep up the newest spans are dropped (counted in otel_sdk_processor_span_processed_total{error_type="queue_full"}), never the records: raise it, or lower tracesSampleRatio.',
          ),
        traceThreadNice: z
          .number()
          .int()
          .min(0)
          .max(19)
          .default(19)
          .describe(
            'Nice value of the thread that makes and exports spans (Linux). Above 0 it yields the CPU to the thread that reads, scores and answers records: on a busy machine spans wait, or are dropped and counted, instead of results. 0: the same priority as the worker.',
          ),
        metricsExportIntervalMs: z
          .number()
          .int()
          .min(100)
          .default(10000)
          .describe('How often metrics are pushed over OTLP (when otlpEndpoint is set).'),
      })
      .strict()
      .prefault({}),
    http: z
      .object({
        enabled: z
          .boolean()
          .default(true)
          .describe('Serve /healthz, /readyz and /metrics (Prometheus text).'),
        host: z.string().min(1).default('0.0.0.0').describe('Address the HTTP server listens on.'),
        port: z
          .number()
          .int()
          .min(0)
          .max(65535)
          .default(9464)
          .describe(
            'Port of the HTTP server (9464 is the usual port of an OpenTelemetry Prometheus endpoint). 0: any free port, logged at start.',
          ),
      })
      .strict()
      .prefault({}),
    log: z
      .object({
        level: z
          .enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'])
          .default('info')
          .describe('pino log level.'),
      })
      .strict()
      .prefault({}),
  })
  .strict();

export type StreamscoreConfig = z.infer<typeof configSchema>;
export type ConfigInput = z.input<typeof configSchema>;
