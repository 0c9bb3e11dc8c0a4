export { BatchPolicy, type BatchPolicyOptions } from './policy.js';
export { BatchDriver, type BatchDriverOptions } from './driver.js';
export { systemClock, type Clock } from './clock.js';
