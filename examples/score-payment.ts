/**
 * A service that wants an answer: score one payment and wait for its PaymentScore.
 *
 *   STREAMSCORE_KAFKA_BROKERS=127.0.0.1:9092 \
 *   STREAMSCORE_REGISTRY_URL=http://127.0.0.1:8081/apis/ccompat/v7 \
 *   npx tsx examples/score-payment.ts
 *
 * Outside this repository, import from 'streamscore' instead of '../src/index.js'.
 */
import { clientCodecFor, isScoringError, loadConfig, ScoringClient } from '../src/index.js';

const config = loadConfig({ file: 'config/payments.yaml' }); // + STREAMSCORE_* from the environment
const client = await ScoringClient.connect({
  brokers: config.kafka.brokers,
  codec: await clientCodecFor(config, 'payments.requests'), // framing and schema as the worker's
  deadLetterTopic: config.topics.deadLetter,
  timeoutMs: 10_000,
});
try {
  const score = await client.score({
    paymentId: 'pay-42',
    amount: 640,
    merchantCategory: 'ELECTRONICS',
    country: 'NL',
    hourOfDay: 2,
    cardPresent: false,
    accountAgeDays: 20,
    channel: 'app',
  });
  console.log(score); // { paymentId: 'pay-42', decision: 'fraud', fraudScore: 0.97…, flagged: true, … }
} catch (err) {
  // DEAD_LETTERED (err.workerCode says why), TIMEOUT, CLIENT_CLOSED, …
  if (isScoringError(err)) console.error(err.code, err.message);
  else throw err;
} finally {
  await client.close();
}
