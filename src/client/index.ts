export {
  ScoringClient,
  DEFAULT_TIMEOUT_MS,
  type ScoringClientOptions,
  type ScoringCodec,
  type ScoreOptions,
  type ScoringTransport,
  type OutgoingRequest,
  type Answer,
} from './scoring-client.js';
export { ScoringError, isScoringError, type ScoringErrorCode } from './errors.js';
export { kafkajsTransport } from './kafka-transport.js';
