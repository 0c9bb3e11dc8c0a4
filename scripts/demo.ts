/**
 * The main job on embedded defaults: `npm run demo`.
 *
 * Starts a local Kafka broker unless STREAMSCORE_KAFKA_BROKERS names one, creates the topics,
 * starts the worker (`streamscore run`, as its own process), produces the held-out digits as
 * requests at a steady pace, reads the results back, prints predictions, accuracy and latency,
 * then stops everything it started.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, mkdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Partitioners, type Kafka } from 'kafkajs';
import { AvroCodec } from '../src/codec/avro.js';
import { loadConfig } from '../src/config/index.js';
import { createKafka, ensureTopics } from '../src/kafka/kafkajs.js';
import { startLocalBroker, type LocalBroker } from '../src/kafka/local-broker.js';
import { loadDigitsDataset } from '../src/model/digits-data.js';
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
  const started: { broker?: LocalBroker; worker?: ChildProcess } = {};
  const cleanup = async () => {
    if (started.worker && started.worker.exitCode === null) {
      started.worker.kill('SIGTERM');
      await new Promise((resolve) => started.worker!.once('exit', resolve));
    }
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
    started.worker = await startWorker(brokers, runId);

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
  } finally {
    await cleanup();
  }
}

/** Runs the real CLI in its own process, as a user would, and waits until it has partitions. */
async function startWorker(brokers: string[], runId: string): Promise<ChildProcess> {
  const logDir = path.join(ROOT, '.cache', 'demo');
  mkdirSync(logDir, { recursive: true });
  const logFile = path.join(logDir, `${runId}-worker.log`);
  const child = spawn(
    process.execPath,
    ['--import', 'tsx', path.join(ROOT, 'src/cli/main.ts'), 'run'],
    {
      cwd: ROOT,
      env: {
        ...process.env,
        STREAMSCORE_KAFKA_BROKERS: brokers.join(','),
        STREAMSCORE_LOG_LEVEL: 'info',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  const file = createWriteStream(logFile);
  child.stderr!.pipe(file);
  say(`• Starting the worker: streamscore run (JSON log: ${path.relative(ROOT, logFile)})`);

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

main().then(
  () => say('• Stopped the worker and the broker. Done.'),
  (err: unknown) => {
    process.stderr.write(`demo failed: ${(err as Error).stack ?? String(err)}\n`);
    process.exit(1);
  },
);
