export {
  configSchema,
  backendPreferences,
  type StreamscoreConfig,
  type ConfigInput,
} from './schema.js';
export { loadConfig, configKeys, requireBrokers, ENV_PREFIX, type ConfigKey } from './load.js';
