/**
 * ScoringClient against the real broker and a real worker (startService, the digits model): many
 * requests in flight at once, a request the worker dead-letters, a topic nobody serves.
 */
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { ScoringClient } from '../../src/client/scoring-client.js';
import { ScoringError } from '../../src/client/errors.js';
import { AvroCodec } from '../../src/codec/avro.js';
import { clientCodecFor } from '../../src/codec/topics.js';
import { loadConfig, type StreamscoreConfig } from '../../src/config/index.js';
import { loadDigitsDataset } from '../../src/model/digits-data.js';
import { startService, type Service } from '../../src/service.js';
import { silentLogger } from '../../src/telemetry/logger.js';
import { HEADER } from '../../src/worker/headers.js';
import { freshTopics, testKafka, uniqueTopic } from './helpers/kafka.js';

const brokers = inject('kafkaBrokers');
const IN_FLIGHT = 300;

describe('ScoringClient against a real worker', () => {
  const { heldOut } = loadDigitsDataset();
  let topics: Record<'requests' | 'results' | 'deadLetter' | 'unserved', string>;
  let config: StreamscoreConfig;
  /** What the clients know: the worker's topics and one more that nobody serves. */
  let clientConfig: StreamscoreConfig;
  let service: Service;
  const clients: ScoringClient[] = [];

  const connect = async (topic: string, timeoutMs?: number) => {
    const client = await ScoringClient.connect({
      kafka: testKafka(brokers, 'streamscore-test-client'),
      codec: await clientCodecFor(clientConfig, topic),
      deadLetterTopic: config.topics.deadLetter,
      ...(timeoutMs === undefined ? {} : { timeoutMs }),
    });
    clients.push(client);
    return client;
  };

  const request = (i: number) => ({
    model: null,
    modelVersion: null,
    requestedAt: Date.now(),
    inputs: [
      { name: 'pixels', shape: [64], data: Array.from(heldOut[i % heldOut.length]!.pixels) },
    ],
  });

  beforeAll(async () => {
    topics = await freshTopics(
      brokers,
      'client',
      ['requests', 'results', 'deadLetter', 'unserved'],
      4,
    );
    config = loadConfig({
      env: {},
      overrides: {
        kafka: { brokers, groupId: uniqueTopic('client-worker') },
        topics: {
          requests: [topics.requests],
          results: topics.results,
          deadLetter: topics.deadLetter,
        },
        model: { name: 'digits', version: '1', replicas: 1 },
        commit: { intervalMs: 100 },
        log: { level: 'silent' },
        http: { port: 0 },
      },
    });
    clientConfig = {
      ...config,
      topics: { ...config.topics, requests: [topics.requests, topics.unserved] },
    };
    service = await startService(config, { log: silentLogger });
  });

  afterAll(async () => {
    await Promise.all(clients.map((c) => c.close()));
    await service?.stop();
  });

  it(`answers ${IN_FLIGHT} calls in flight at once, each with the result for its own input`, async () => {
    const client = await connect(topics.requests);
    // A second client on the same topics reads the first one's results too, and must ignore them.
    const other = await connect(topics.requests);

    // Sent right after connect() resolved: nothing may be missed in between.
    const calls = Array.from({ length: IN_FLIGHT }, (_, i) =>
      client.score({ id: `digit-${i}`, ...request(i) }),
    );
    const otherCalls = Array.from({ length: 50 }, (_, i) => other.score(request(i + 1000)));
    expect(client.inFlight).toBe(IN_FLIGHT);

    const results = await Promise.all(calls);
    const otherResults = await Promise.all(otherCalls);
    expect(results.map((r) => r['id'])).toEqual(calls.map((_, i) => `digit-${i}`));
    const right = results.filter(
      (r, i) => r['label'] === String(heldOut[i % heldOut.length]!.label),
    ).length;
    console.log(`ScoringClient: ${IN_FLIGHT} in flight, ${right} labelled as the true digit`);
    expect(right / IN_FLIGHT).toBeGreaterThanOrEqual(0.9);
    expect(otherResults).toHaveLength(50);
    for (const r of otherResults) expect(r['id']).toMatch(/^[0-9a-f-]{36}$/);
    expect(client.inFlight).toBe(0);
    expect(other.inFlight).toBe(0);
  });

  it('rejects a request the worker dead-letters with DEAD_LETTERED and the worker’s code', async () => {
    const client = await connect(topics.requests);
    const good = client.score(request(1));
    const bad = client.score({
      ...request(2),
      id: 'wrong-shape',
      inputs: [{ name: 'pixels', shape: [63], data: new Array<number>(63).fill(0.5) }],
    });
    const err = (await bad.catch((e: unknown) => e)) as ScoringError;
    expect(err).toBeInstanceOf(ScoringError);
    expect(err.code).toBe('DEAD_LETTERED');
    expect(err.requestId).toBe('wrong-shape');
    expect(err.workerCode).toBe('WRONG_SHAPE');
    expect(err.workerMessage).toMatch(/shape \[63\]/);
    expect(err.headers[HEADER.sourceTopic]).toBe(topics.requests);
    await expect(good).resolves.toMatchObject({ model: 'digits' });
  });

  it('rejects with TIMEOUT when nobody serves the topic', async () => {
    const client = await connect(topics.unserved, 1500);
    const err = (await client.score(request(3)).catch((e: unknown) => e)) as ScoringError;
    expect(err).toBeInstanceOf(ScoringError);
    expect(err.code).toBe('TIMEOUT');
    expect(client.inFlight).toBe(0);
  });

  it('reads an answer written the moment connect() resolved, before its request even went out', async () => {
    const client = await connect(topics.unserved);
    const call = client.score({ id: 'early', ...request(5) });
    const now = Date.now();
    const producer = testKafka(brokers).producer();
    await producer.connect();
    await producer.send({
      topic: topics.results,
      messages: [
        {
          key: 'early',
          value: new AvroCodec().encodeResult({
            id: 'early',
            model: 'digits',
            modelVersion: '1',
            outputs: [],
            label: '7',
            labelIndex: 7,
            score: 0.9,
            requestedAt: now,
            receivedAt: now,
            inferredAt: now,
            sentAt: now,
          }),
          headers: { [HEADER.correlationId]: 'early' },
        },
      ],
    });
    await producer.disconnect();
    await expect(call).resolves.toMatchObject({ id: 'early', label: '7' });
  });

  it('close() rejects what is still waiting with CLIENT_CLOSED', async () => {
    const client = await connect(topics.unserved);
    const call = client.score(request(4)).catch((e: unknown) => e);
    await client.close();
    expect(await call).toMatchObject({ code: 'CLIENT_CLOSED' });
  });
});
