/**
 * Fault 5: a model that throws for some inputs. The real digits model behind a ModelRunner that
 * throws a non-retriable MODEL_FAILED for any batch holding a marked request (first pixel -1),
 * and a retriable error, every time, for any batch holding a flaky one (first pixel -2). The
 * worker must narrow each failing batch down to those requests: only they are dead-lettered (to
 * topics.failed, category failed; the flaky ones after delivery.maxAttempts tries, with their
 * history), every other request of the same batches is answered with its own prediction.
 */
import { Partitioners } from 'kafkajs';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { AvroCodec } from '../../src/codec/avro.js';
import { loadConfig } from '../../src/config/index.js';
import { StreamscoreError } from '../../src/errors.js';
import { createKafka, KafkajsSink, KafkajsSource } from '../../src/kafka/kafkajs.js';
import { loadDigitsDataset } from '../../src/model/digits-data.js';
import type { TfjsModelRunner } from '../../src/model/tfjs-runner.js';
import type { BatchOutputs, ModelRunner, PackedBatch } from '../../src/model/types.js';
import { silentLogger } from '../../src/telemetry/logger.js';
import { HEADER } from '../../src/worker/headers.js';
import { InferenceWorker } from '../../src/worker/worker.js';
import { createTopics, readAll, testKafka, uniqueTopic } from '../integration/helpers/kafka.js';
import { loadDigitsRunner } from '../model/helpers.js';
import { countFigures, reportFigures } from './figures.js';

const brokers = inject('kafkaBrokers');
const codec = new AvroCodec();
const TOTAL = 3000;
const PARTITIONS = 4;
const MAX_ATTEMPTS = 3;
const FAILING = -1;
const FLAKY = -2;
const TOLERANCE = 1e-5;

/** The digits model, failing for marked inputs as a model might for inputs it cannot handle. */
class FailingDigits implements ModelRunner {
  predicts = 0;
  failures = 0;
  constructor(private readonly model: TfjsModelRunner) {}
  get info() {
    return this.model.info;
  }
  async predict(batch: PackedBatch): Promise<BatchOutputs> {
    this.predicts++;
    const pixels = batch.inputs.pixels!;
    for (let row = 0; row < batch.size; row++) {
      const first = pixels[row * 64];
      if (first === FAILING) {
        this.failures++;
        throw new StreamscoreError('MODEL_FAILED', `cannot score row ${row}: unsupported input`);
      }
      if (first === FLAKY) {
        this.failures++;
        throw new StreamscoreError('MODEL_FAILED', `device busy on row ${row}`, {
          retriable: true,
        });
      }
    }
    return this.model.predict(batch);
  }
  async dispose(): Promise<void> {}
}

describe('fault 5: a model that throws for some inputs', () => {
  let model: TfjsModelRunner;
  let worker: InferenceWorker | undefined;
  beforeAll(async () => {
    model = await loadDigitsRunner();
  });
  afterAll(async () => {
    await worker?.stop();
    await model.dispose();
  });

  it('dead-letters only the inputs the model fails for and answers all the others', async () => {
    const topics = {
      requests: uniqueTopic('model-errors-requests'),
      results: uniqueTopic('model-errors-results'),
      deadLetter: uniqueTopic('model-errors-dlq'),
      failed: uniqueTopic('model-errors-failed'),
    };
    await createTopics(
      brokers,
      Object.values(topics).map((topic) => ({ topic, numPartitions: PARTITIONS })),
    );
    const config = loadConfig({
      env: {},
      overrides: { kafka: { brokers, groupId: uniqueTopic('model-errors-group') } },
    });

    // Every 97th request fails for good, every 211th fails retriably every time.
    const { heldOut } = loadDigitsDataset();
    const marks = new Map<string, number>();
    const requests = Array.from({ length: TOTAL }, (_, i) => {
      const id = `m-${i}`;
      const data = Float32Array.from(heldOut[i % heldOut.length]!.pixels);
      if (i % 97 === 5) marks.set(id, (data[0] = FAILING));
      else if (i % 211 === 7) marks.set(id, (data[0] = FLAKY));
      return {
        key: id,
        value: codec.encodeRequest({
          id,
          model: null,
          modelVersion: null,
          requestedAt: Date.now(),
          inputs: [{ name: 'pixels', shape: [64], data }],
        }),
        data,
      };
    });
    const flaky = [...marks.values()].filter((v) => v === FLAKY).length;
    expect(flaky).toBeGreaterThan(5);

    // What the model says for each good request, batch of one, for comparison.
    const offline = new Map<string, Float32Array>();
    for (let i = 0; i < TOTAL; i += 500) {
      const slice = requests.slice(i, i + 500);
      const pixels = new Float32Array(slice.length * 64);
      slice.forEach((r, k) => pixels.set(r.data, k * 64));
      const { probabilities } = await model.predict({ size: slice.length, inputs: { pixels } });
      slice.forEach((r, k) => offline.set(r.key, probabilities!.slice(k * 10, (k + 1) * 10)));
    }

    const failing = new FailingDigits(model);
    const kafka = createKafka(config.kafka, silentLogger);
    const sink = new KafkajsSink(kafka, { compression: 'none', log: silentLogger });
    await sink.connect();
    const source = new KafkajsSource(kafka, {
      groupId: config.kafka.groupId,
      topics: [topics.requests],
      fromBeginning: true,
      sessionTimeoutMs: config.kafka.sessionTimeoutMs,
      fetchMaxWaitMs: config.kafka.fetchMaxWaitMs,
      fetchMaxBytesPerPartition: config.kafka.fetchMaxBytesPerPartition,
      log: silentLogger,
    });
    worker = new InferenceWorker({
      source,
      sink,
      codec,
      model: failing,
      log: silentLogger,
      options: {
        resultTopic: topics.results,
        deadLetterTopic: topics.deadLetter,
        failedTopic: topics.failed,
        maxAttempts: MAX_ATTEMPTS,
        maxBatchSize: 64,
        maxDelayMs: 5,
        maxQueued: 16384,
        maxPayloadBytes: config.limits.maxPayloadBytes,
        commitIntervalMs: 100,
        drainTimeoutMs: 15_000,
      },
    });
    await worker.start();

    const producer = testKafka(brokers).producer({
      createPartitioner: Partitioners.DefaultPartitioner,
    });
    await producer.connect();
    for (let i = 0; i < TOTAL; i += 250) {
      await producer.send({
        topic: topics.requests,
        messages: requests.slice(i, i + 250).map(({ key, value }) => ({ key, value })),
      });
    }
    await producer.disconnect();

    const results = await readAll(brokers, topics.results, {
      expected: TOTAL - marks.size,
      timeoutMs: 120_000,
    });
    const letters = await readAll(brokers, topics.failed, {
      expected: marks.size,
      timeoutMs: 60_000,
    });
    const report = await worker.stop();
    worker = undefined;
    const unprocessable = await readAll(brokers, topics.deadLetter, {
      expected: 1,
      timeoutMs: 2_000,
    });

    const resultIds = results.map((m) => codec.decodeResult(m.value!).id);
    const figures = countFigures({
      sent: requests.map((r) => r.key),
      resultIds,
      deadLetterIds: letters.map((m) => m.headers![HEADER.correlationId]!.toString()),
    });
    reportFigures('model throws for some inputs (in-process worker, 4 partitions)', figures, {
      marked: marks.size,
      retriablyFailing: flaky,
      maxAttempts: MAX_ATTEMPTS,
      predicts: failing.predicts,
      modelFailures: failing.failures,
    });

    expect(report).toEqual({ unanswered: 0, drained: true });
    expect(unprocessable).toEqual([]); // the failed category goes to topics.failed
    // Only the marked requests are dead-lettered, each once, with the right headers.
    expect(new Set(letters.map((m) => m.headers![HEADER.correlationId]!.toString()))).toEqual(
      new Set(marks.keys()),
    );
    for (const letter of letters) {
      const headers = letter.headers!;
      const id = headers[HEADER.correlationId]!.toString();
      const attempts = headers[HEADER.errorAttempts]?.toString();
      const history = headers[HEADER.errorHistory]?.toString();
      expect(headers[HEADER.errorCode]!.toString()).toBe('MODEL_FAILED');
      expect(headers[HEADER.errorCategory]!.toString()).toBe('failed');
      expect(letter.key!.toString()).toBe(id);
      if (marks.get(id) === FLAKY) {
        expect(attempts).toBe(String(MAX_ATTEMPTS));
        expect(history).toBe(
          Array(MAX_ATTEMPTS).fill('MODEL_FAILED: device busy on row 0').join('; '),
        );
      } else {
        expect(attempts).toBeUndefined(); // failed for good the first time it was tried alone
        expect(history).toBeUndefined();
      }
    }
    // Every other request answered, each with its own prediction (not a neighbour's row).
    expect(new Set(resultIds)).toEqual(
      new Set(requests.map((r) => r.key).filter((id) => !marks.has(id))),
    );
    let mismatches = 0;
    for (const message of results) {
      const result = codec.decodeResult(message.value!);
      const expected = offline.get(result.id)!;
      if (result.outputs[0]!.data.some((v, k) => Math.abs(v - expected[k]!) > TOLERANCE))
        mismatches++;
    }
    expect(mismatches).toBe(0);
    expect(figures).toMatchObject({ lost: 0, duplicates: 0, deadLettered: marks.size });
  });
});
