/**
 * The main job on embedded defaults: `npm run demo`.
 *
 * Starts a local Kafka broker unless STREAMSCORE_KAFKA_BROKERS names one, creates the topics,
 * starts the worker (`streamscore run`, as its own process), produces the held-out digits as
 * requests at a steady pace, reads the results back, prints predictions, accuracy and latency,
 * then stops everything it started. Then the same for the user's own records: payments through a
 * Schema Registry (a local one unless STREAMSCORE_REGISTRY_URL names one), mapped to the fraud
 * model by config/payments.yaml.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, mkdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { SchemaRegistry, SchemaType } from '@kafkajs/confluent-schema-registry';
import { Partitioners, type Kafka } from 'kafkajs';
import { AvroCodec } from '../src/codec/avro.js';
import { loadConfig } from '../src/config/index.js';
import { createKafka, ensureTopics } from '../src/kafka/kafkajs.js';
import { startLocalBroker, type LocalBroker } from '../src/kafka/local-broker.js';
import { loadDigitsDataset } from '../src/model/digits-data.js';
import {
  generatePayments,
  PAYMENTS_SAMPLE_SEED,
  type Payment,
} from '../src/model/payments-data.js';
import { startLocalRegistry, type LocalRegistry } from '../src/registry/local-registry.js';
import { createLogger } from '../src/telemetry/logger.js';
import { percentile } from '../src/telemetry/stats.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const PARTITIONS = 4;
const PER_TICK = 10;
const TICK_MS = 20; // 500 requests/s: light load, so latency shows the batching, not a queue
const RESULT_TIMEOUT_MS = 60_000;

const say = (text: string) => process.stdout.write(text + '\n');

async function main(): Promise<void> {
  const config = loadConfig();
  const log = createLogger('warn');
  const started: {
    broker?: LocalBroker;
    registry?: LocalRegistry;
    workers: ChildProcess[];
  } = { workers: [] };
  const cleanup = async () => {
    for (const worker of started.workers) {
      if (worker.exitCode !== null) continue;
      worker.kill('SIGTERM');
      await new Promise((resolve) => worker.once('exit', resolve));
    }
    await started.registry?.stop();
    await started.broker?.stop();
  };
  process.once('SIGINT', () => void cleanup().then(() => process.exit(130)));

  try {
    let brokers = config.kafka.brokers;
    if (brokers.length === 0) {
      say('• No brokers configured (STREAMSCORE_KAFKA_BROKERS): starting a local Kafka broker…');
      const t0 = Date.now();
      started.broker = await startLocalBroker({ log: () => undefined });
      brokers = started.broker.brokers;
      say(`  Kafka is up at ${brokers.join(',')} after ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    }
    const kafka = createKafka({ ...config.kafka, brokers }, log);
    const { requests, results, deadLetter } = {
      ...config.topics,
      requests: config.topics.requests[0]!,
    };
    await ensureTopics(
      kafka,
      [requests, results, deadLetter].map((topic) => ({ topic, numPartitions: PARTITIONS })),
    );
    say(
      `• Topics ready: ${requests} → ${results} (dead letters: ${deadLetter}), ${PARTITIONS} partitions`,
    );

    const runId = `demo-${Date.now().toString(36)}`;
    started.workers.push(await startWorker(brokers, runId));

    const { heldOut } = loadDigitsDataset();
    const collected = collectResults(kafka, results, runId, heldOut.length);
    await collected.ready;

    say(
      `• Producing ${heldOut.length} held-out handwritten digits as Avro requests (${(PER_TICK * 1000) / TICK_MS}/s)…`,
    );
    const codec = new AvroCodec();
    const producer = kafka.producer({ createPartitioner: Partitioners.DefaultPartitioner });
    await producer.connect();
    for (let i = 0; i < heldOut.length; i += PER_TICK) {
      const now = Date.now();
      await producer.send({
        topic: requests,
        messages: heldOut.slice(i, i + PER_TICK).map((sample) => ({
          key: sample.id,
          value: codec.encodeRequest({
            id: `${runId}/${sample.id}`,
            model: null,
            modelVersion: null,
            requestedAt: now,
            inputs: [{ name: 'pixels', shape: [64], data: sample.pixels }],
          }),
        })),
      });
      await new Promise((resolve) => setTimeout(resolve, TICK_MS));
    }
    await producer.disconnect();

    const answers = await collected.done;
    report(heldOut, answers, runId);

    await payments(kafka, brokers, runId, started);
  } finally {
    await cleanup();
  }
}

/** Runs the real CLI in its own process, as a user would, and waits until it has partitions. */
async function startWorker(
  brokers: string[],
  runId: string,
  extra: { name: string; args: string[]; env: Record<string, string> } = {
    name: 'worker',
    args: [],
    env: {},
  },
): Promise<ChildProcess> {
  const logDir = path.join(ROOT, '.cache', 'demo');
  mkdirSync(logDir, { recursive: true });
  const logFile = path.join(logDir, `${runId}-${extra.name}.log`);
  const child = spawn(
    process.execPath,
    ['--import', 'tsx', path.join(ROOT, 'src/cli/main.ts'), 'run', ...extra.args],
    {
      cwd: ROOT,
      env: {
        ...process.env,
        STREAMSCORE_KAFKA_BROKERS: brokers.join(','),
        STREAMSCORE_LOG_LEVEL: 'info',
        ...extra.env,
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  const file = createWriteStream(logFile);
  child.stderr!.pipe(file);
  say(
    `• Starting the worker: streamscore run ${extra.args.join(' ')} (JSON log: ${path.relative(ROOT, logFile)})`,
  );

  return new Promise((resolve, reject) => {
    let buffered = '';
    let backend = '';
    child.once('exit', (code) =>
      reject(new Error(`worker exited with code ${code} before it was ready; see ${logFile}`)),
    );
    child.stdout!.on('data', (chunk: Buffer) => {
      file.write(chunk);
      buffered += chunk.toString();
      let newline;
      while ((newline = buffered.indexOf('\n')) >= 0) {
        const line = buffered.slice(0, newline);
        buffered = buffered.slice(newline + 1);
        let entry: { msg?: string; backend?: string; package?: string; partitions?: unknown[] };
        try {
          entry = JSON.parse(line) as typeof entry;
        } catch {
          continue; // not a log line
        }
        if (entry.backend && entry.package) {
          backend = `${entry.backend} (${entry.package})`;
          say(`  tfjs backend: ${backend}`);
        }
        if (entry.msg === 'partitions assigned' && (entry.partitions?.length ?? 0) > 0) {
          say(`  worker joined its group with ${entry.partitions!.length} partitions`);
          child.removeAllListeners('exit');
          resolve(child);
        }
      }
    });
  });
}

interface Answer {
  label: string | null;
  score: number | null;
  latencyMs: number;
  queueMs: number;
  inferMs: number;
}

/** A consumer on the result topic that keeps this run's answers (older runs may share the topic). */
function collectResults(kafka: Kafka, topic: string, runId: string, expected: number) {
  const codec = new AvroCodec();
  const answers = new Map<string, Answer>();
  const consumer = kafka.consumer({ groupId: `${runId}-reader` });
  let markReady: () => void = () => undefined;
  const ready = new Promise<void>((resolve) => (markReady = resolve));
  consumer.on(consumer.events.GROUP_JOIN, () => markReady());
  const done = (async () => {
    await consumer.connect();
    await consumer.subscribe({ topic, fromBeginning: false });
    let finish: () => void = () => undefined;
    const all = new Promise<void>((resolve) => (finish = resolve));
    await consumer.run({
      eachMessage: async ({ message }) => {
        const receivedAt = Date.now();
        const result = codec.decodeResult(message.value!);
        if (!result.id.startsWith(`${runId}/`)) return;
        answers.set(result.id.slice(runId.length + 1), {
          label: result.label,
          score: result.score,
          latencyMs: receivedAt - result.requestedAt,
          queueMs: result.receivedAt - result.requestedAt,
          inferMs: result.inferredAt - result.receivedAt,
        });
        if (answers.size >= expected) finish();
      },
    });
    const timeout = setTimeout(finish, RESULT_TIMEOUT_MS);
    await all;
    clearTimeout(timeout);
    await consumer.disconnect();
    return answers;
  })();
  return { ready, done };
}

function report(
  samples: ReturnType<typeof loadDigitsDataset>['heldOut'],
  answers: Map<string, Answer>,
  runId: string,
) {
  say(`• Results (${answers.size}/${samples.length} answered, run ${runId}):`);
  say('    request       true  predicted  score');
  for (const sample of samples.slice(0, 10)) {
    const a = answers.get(sample.id);
    const mark = a?.label === String(sample.label) ? '✓' : '✗';
    say(
      `    ${sample.id.padEnd(12)}  ${String(sample.label).padStart(4)}  ${String(a?.label ?? '—').padStart(9)}  ${a?.score?.toFixed(3) ?? '—'}  ${mark}`,
    );
  }
  const correct = samples.filter((s) => answers.get(s.id)?.label === String(s.label)).length;
  const latencies = [...answers.values()].map((a) => a.latencyMs);
  say(
    `  accuracy: ${((100 * correct) / samples.length).toFixed(1)} % (${correct}/${samples.length}) on the held-out set`,
  );
  if (latencies.length > 0) {
    say(
      `  end-to-end latency (request → result read): p50 ${percentile(latencies, 50).toFixed(0)} ms, p99 ${percentile(latencies, 99).toFixed(0)} ms` +
        ` (queue p50 ${percentile(
          [...answers.values()].map((a) => a.queueMs),
          50,
        ).toFixed(0)} ms, batch+inference p50 ${percentile(
          [...answers.values()].map((a) => a.inferMs),
          50,
        ).toFixed(0)} ms)`,
    );
  }
  if (answers.size < samples.length) {
    process.exitCode = 1;
    say(
      `  ${samples.length - answers.size} requests were not answered within ${RESULT_TIMEOUT_MS / 1000} s`,
    );
  }
}

/**
 * The second job: the user's own records. Payments (data/payments/payments.jsonl) are produced as
 * Confluent-framed Avro through a Schema Registry, as a pipeline that already speaks Avro would;
 * a worker on config/payments.yaml maps their fields to the fraud model and writes PaymentScore
 * records, framed, read back here through the registry.
 */
async function payments(
  kafka: Kafka,
  brokers: string[],
  runId: string,
  started: { registry?: LocalRegistry; workers: ChildProcess[] },
): Promise<void> {
  let registryUrl = process.env['STREAMSCORE_REGISTRY_URL'];
  if (!registryUrl) {
    say('• Payments through a Schema Registry: starting a local one (Apicurio Registry)…');
    const t0 = Date.now();
    try {
      started.registry = await startLocalRegistry({ log: () => undefined });
    } catch (err) {
      say(`  skipped: no local Schema Registry (${(err as Error).message})`);
      return;
    }
    registryUrl = started.registry.url;
    say(`  registry is up at ${registryUrl} after ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  }
  const config = loadConfig({ file: path.join(ROOT, 'config/payments.yaml'), env: {} });
  const requests = config.topics.requests[0]!;
  const { results, deadLetter } = config.topics;
  await ensureTopics(
    kafka,
    [requests, results, deadLetter].map((topic) => ({ topic, numPartitions: PARTITIONS })),
  );
  started.workers.push(
    await startWorker(brokers, runId, {
      name: 'payments-worker',
      args: ['--config', 'config/payments.yaml'],
      // The digits worker holds the default HTTP port.
      env: { STREAMSCORE_REGISTRY_URL: registryUrl, STREAMSCORE_HTTP_PORT: '0' },
    }),
  );

  const registry = new SchemaRegistry({ host: registryUrl });
  const lines = readFileSync(path.join(ROOT, 'data/payments/payments.jsonl'), 'utf8')
    .split('\n')
    .filter((line) => line.trim() !== '')
    .map((line) => JSON.parse(line) as Payment);
  const truth = new Map(
    generatePayments(lines.length, PAYMENTS_SAMPLE_SEED).map((p) => [p.payment.paymentId, p.fraud]),
  );
  const scores = new Map<string, Record<string, unknown>>();
  const consumer = kafka.consumer({ groupId: `${runId}-payments-reader` });
  let joined: () => void = () => undefined;
  const ready = new Promise<void>((resolve) => (joined = resolve));
  consumer.on(consumer.events.GROUP_JOIN, () => joined());
  let finish: () => void = () => undefined;
  const all = new Promise<void>((resolve) => (finish = resolve));
  await consumer.connect();
  await consumer.subscribe({ topic: results, fromBeginning: false });
  await consumer.run({
    eachMessage: async ({ message }) => {
      const score = (await registry.decode(message.value!)) as Record<string, unknown>;
      scores.set(String(score['paymentId']), score);
      if (scores.size >= lines.length) finish();
    },
  });
  await ready;

  const schema = readFileSync(path.join(ROOT, 'schemas/examples/payment.avsc'), 'utf8');
  const { id } = await registry.register(
    { type: SchemaType.AVRO, schema },
    { subject: `${requests}-value` },
  );
  say(
    `• Producing ${lines.length} payments (data/payments/payments.jsonl) as Confluent-framed Avro, schema id ${id} (subject ${requests}-value)…`,
  );
  const producer = kafka.producer({ createPartitioner: Partitioners.DefaultPartitioner });
  await producer.connect();
  for (let i = 0; i < lines.length; i += 100) {
    const batch = lines.slice(i, i + 100);
    await producer.send({
      topic: requests,
      messages: await Promise.all(
        batch.map(async (p) => ({ key: p.paymentId, value: await registry.encode(id, p) })),
      ),
    });
  }
  await producer.disconnect();
  const timeout = setTimeout(finish, RESULT_TIMEOUT_MS);
  await all;
  clearTimeout(timeout);
  await consumer.disconnect();

  say(
    `• PaymentScore results (${scores.size}/${lines.length} answered, decoded through the registry):`,
  );
  say('    payment                 amount  category      country  decision  p(fraud)  truth');
  for (const p of lines.slice(0, 8)) {
    const s = scores.get(p.paymentId);
    say(
      `    ${p.paymentId.padEnd(21)} ${p.amount.toFixed(2).padStart(8)}  ${p.merchantCategory.padEnd(12)}  ${p.country.padEnd(7)}  ${String(s?.['decision'] ?? '—').padEnd(8)}  ${Number(
        s?.['fraudScore'] ?? NaN,
      )
        .toFixed(3)
        .padStart(8)}  ${truth.get(p.paymentId) ? 'fraud' : 'legit'}`,
    );
  }
  const answered = [...scores.values()];
  const flagged = answered.filter((s) => s['flagged'] === true).length;
  const right = answered.filter((s) => s['flagged'] === truth.get(String(s['paymentId']))).length;
  say(
    `  flagged ${flagged} of ${answered.length}; agreement with the generator's ground truth: ${((100 * right) / Math.max(1, answered.length)).toFixed(1)} %`,
  );
  if (scores.size < lines.length) {
    process.exitCode = 1;
    say(
      `  ${lines.length - scores.size} payments were not answered within ${RESULT_TIMEOUT_MS / 1000} s`,
    );
  }
}

main().then(
  () => say('• Stopped the workers, the registry and the broker. Done.'),
  (err: unknown) => {
    process.stderr.write(`demo failed: ${(err as Error).stack ?? String(err)}\n`);
    process.exit(1);
  },
);
