/**
 * A candidate version on trial: canary (it answers a share of keys), shadow (it also scores a
 * share of the stable version's keys, compared but never answered), and the judge that rolls it
 * back when it crosses a threshold or promotes it once it has passed enough requests.
 *
 * Routing is by the key hash of canary.ts: a key's point p in [0, 1) goes to the canary when
 * p < fraction, is shadowed when the rest of the range scaled to [0, 1) is below `shadow`, and is
 * served by the stable version otherwise. So a key always sees one version while the trial runs.
 */
import type { Logger } from '../telemetry/logger.js';
import { silentLogger } from '../telemetry/logger.js';
import { routePoint } from './canary.js';
import type { ModelRunner } from './types.js';

export type Route = 'stable' | 'canary' | 'shadow';

export interface RollbackThresholds {
  /** Candidate requests that failed (model error, unusable output) ÷ candidate requests. */
  maxErrorRate: number;
  /** Shadowed requests on which both versions chose the same top-1 label ÷ those compared. */
  minAgreement: number | null;
  /**
   * Candidate's inference time per request ÷ the stable version's on calls of the same size class
   * (a power of two: a small canary call costs more per request than a full stable one).
   */
  maxLatencyRatio: number | null;
  /** No judgement before the candidate has scored this many requests (and, for agreement and latency, compared this many). */
  minRequests: number;
}

export interface RolloutOptions {
  candidate: ModelRunner;
  /** Share of keys the candidate answers, 0..1. */
  fraction: number;
  /** Share of the remaining keys the candidate also scores in the shadow, 0..1. */
  shadow?: number;
  thresholds?: RollbackThresholds | null;
  /** Promote automatically once the candidate has scored this many requests within thresholds. */
  promoteAfter?: number | null;
  /** The version serving the stable share, for events. */
  stableVersion?: () => string;
  log?: Logger;
}

export type RolloutState = 'trial' | 'rolled-back' | 'promoted';

/** What the judge saw so far, cumulative since the trial started. */
export interface RolloutStats {
  candidateRequests: number;
  candidateErrors: number;
  compared: number;
  agreed: number;
  /** Sum over compared requests of the mean absolute difference of their scores. */
  absDiffSum: number;
  /** Candidate requests timed in calls of a size class the stable version also ran. */
  candidateTimed: number;
  /** Their inference time, ms, and what the stable version took per request in the same classes. */
  candidateMs: number;
  stableMsForSame: number;
}

export interface RolloutEvent {
  type: 'rollback' | 'promotion';
  model: string;
  /** The candidate's version. */
  version: string;
  /** The version serving the stable share when it happened. */
  stableVersion: string;
  /** 'error-rate' | 'agreement' | 'latency' | 'promote-after' | 'manual' */
  reason: string;
  /** 'judge' (automatic), 'http' or 'cli'. */
  by: string;
  detail: string;
  at: string;
  stats: RolloutStats & {
    errorRate: number;
    agreement: number | null;
    latencyRatio: number | null;
  };
}

export interface RolloutListener {
  /** The candidate was rolled back: every key goes to the stable version from the next batch. */
  rolledBack?(event: RolloutEvent): void;
  /** The candidate was promoted: it now serves every key (the listener swaps it in). */
  promoted?(event: RolloutEvent): void;
}

export class RolloutError extends Error {
  readonly code = 'ROLLOUT_NOT_ACTIVE';
}

export class Rollout {
  readonly candidate: ModelRunner;
  readonly fraction: number;
  readonly shadow: number;
  private readonly thresholds: RollbackThresholds | null;
  private readonly promoteAfter: number | null;
  private readonly log: Logger;
  private readonly stableVersion: () => string;
  private readonly listeners: RolloutListener[] = [];
  private current: RolloutState = 'trial';
  private lastEvent: RolloutEvent | null = null;
  readonly stats: RolloutStats = {
    candidateRequests: 0,
    candidateErrors: 0,
    compared: 0,
    agreed: 0,
    absDiffSum: 0,
    candidateTimed: 0,
    candidateMs: 0,
    stableMsForSame: 0,
  };
  /** Per size class (floor(log2(call size))): [requests, ms] of the calls of each version. */
  private readonly candidateCalls = new Map<number, [number, number]>();
  private readonly stableCalls = new Map<number, [number, number]>();

  constructor(options: RolloutOptions) {
    for (const [key, value] of [
      ['fraction', options.fraction],
      ['shadow', options.shadow ?? 0],
    ] as const) {
      if (!(value >= 0 && value <= 1)) {
        throw new RangeError(`rollout ${key} must be within 0..1, got ${value}`);
      }
    }
    this.candidate = options.candidate;
    this.fraction = options.fraction;
    this.shadow = options.shadow ?? 0;
    this.thresholds = options.thresholds ?? null;
    this.promoteAfter = options.promoteAfter ?? null;
    this.log = (options.log ?? silentLogger).child({ component: 'rollout' });
    this.stableVersion = options.stableVersion ?? (() => 'unknown');
  }

  get state(): RolloutState {
    return this.current;
  }

  /** The last rollback or promotion, if any. */
  get event(): RolloutEvent | null {
    return this.lastEvent;
  }

  listen(listener: RolloutListener): void {
    this.listeners.push(listener);
  }

  /** Where a request goes; every key is 'stable' once the trial is over. */
  route(key: Uint8Array | null | undefined, requestId: string): Route {
    if (this.current !== 'trial') return 'stable';
    const p = routePoint(key, requestId);
    if (p < this.fraction) return 'canary';
    if (
      this.shadow > 0 &&
      this.fraction < 1 &&
      (p - this.fraction) / (1 - this.fraction) < this.shadow
    ) {
      return 'shadow';
    }
    return 'stable';
  }

  /** The candidate scored `requests` requests (canary or shadow) in one call of `ms`, `failed` of them unusably. */
  candidateScored(requests: number, failed: number, ms: number): void {
    this.stats.candidateRequests += requests;
    this.stats.candidateErrors += failed;
    addCall(this.candidateCalls, requests, ms);
    this.compareLatency();
  }

  /** One call of the stable version during the trial, the latency reference. */
  stableScored(requests: number, ms: number): void {
    addCall(this.stableCalls, requests, ms);
    this.compareLatency();
  }

  /** Candidate time against the stable version's per-request time in the same size classes. */
  private compareLatency(): void {
    let timed = 0;
    let ms = 0;
    let reference = 0;
    for (const [size, [n, total]] of this.candidateCalls) {
      const stable = this.stableCalls.get(size);
      if (!stable || stable[0] === 0) continue;
      timed += n;
      ms += total;
      reference += n * (stable[1] / stable[0]);
    }
    this.stats.candidateTimed = timed;
    this.stats.candidateMs = ms;
    this.stats.stableMsForSame = reference;
  }

  /** One shadowed request: did both versions choose the same label, and how far apart were the scores. */
  compared(agree: boolean, meanAbsDiff: number): void {
    this.stats.compared++;
    if (agree) this.stats.agreed++;
    this.stats.absDiffSum += meanAbsDiff;
  }

  /** Checks the thresholds (call after each batch); rolls back or promotes when one is reached. */
  judge(): RolloutEvent | null {
    if (this.current !== 'trial') return null;
    const t = this.thresholds;
    const s = this.stats;
    if (t && s.candidateRequests >= t.minRequests) {
      const view = this.view();
      if (view.errorRate > t.maxErrorRate) {
        return this.rollback(
          'error-rate',
          'judge',
          `error rate ${pct(view.errorRate)} > ${pct(t.maxErrorRate)}`,
        );
      }
      if (
        t.minAgreement !== null &&
        s.compared >= t.minRequests &&
        view.agreement! < t.minAgreement
      ) {
        return this.rollback(
          'agreement',
          'judge',
          `top-1 agreement ${pct(view.agreement!)} < ${pct(t.minAgreement)}`,
        );
      }
      if (
        t.maxLatencyRatio !== null &&
        s.candidateTimed >= t.minRequests &&
        view.latencyRatio !== null &&
        view.latencyRatio > t.maxLatencyRatio
      ) {
        return this.rollback(
          'latency',
          'judge',
          `latency ${view.latencyRatio!.toFixed(2)}× stable > ${t.maxLatencyRatio}×`,
        );
      }
    }
    if (this.promoteAfter !== null && s.candidateRequests >= this.promoteAfter) {
      return this.promote(
        'judge',
        'promote-after',
        `${s.candidateRequests} requests within thresholds`,
      );
    }
    return null;
  }

  /** Ends the trial: every key goes to the stable version. Throws RolloutError when over. */
  rollback(reason: string, by: string, detail = 'by hand'): RolloutEvent {
    const event = this.end('rolled-back', 'rollback', reason, by, detail);
    this.log.error(
      { rollout: event },
      `candidate ${event.model} ${event.version} rolled back: ${detail}`,
    );
    for (const l of this.listeners) l.rolledBack?.(event);
    return event;
  }

  /** Ends the trial: the candidate serves every key (the listener swaps it in). */
  promote(by: string, reason = 'manual', detail = 'by hand'): RolloutEvent {
    const event = this.end('promoted', 'promotion', reason, by, detail);
    this.log.warn(
      { rollout: event },
      `candidate ${event.model} ${event.version} promoted: ${detail}`,
    );
    for (const l of this.listeners) l.promoted?.(event);
    return event;
  }

  /** The judge's view: rates and ratios, null where nothing was measured yet. */
  view(): RolloutEvent['stats'] {
    const s = this.stats;
    return {
      ...s,
      errorRate: s.candidateRequests === 0 ? 0 : s.candidateErrors / s.candidateRequests,
      agreement: s.compared === 0 ? null : s.agreed / s.compared,
      latencyRatio: s.stableMsForSame > 0 ? s.candidateMs / s.stableMsForSame : null,
    };
  }

  private end(
    state: Exclude<RolloutState, 'trial'>,
    type: RolloutEvent['type'],
    reason: string,
    by: string,
    detail: string,
  ): RolloutEvent {
    if (this.current !== 'trial') {
      throw new RolloutError(
        `no candidate on trial: ${this.candidate.info.version} was already ${this.current}`,
      );
    }
    this.current = state;
    this.lastEvent = {
      type,
      model: this.candidate.info.name,
      version: this.candidate.info.version,
      stableVersion: this.stableVersion(),
      reason,
      by,
      detail,
      at: new Date().toISOString(),
      stats: this.view(),
    };
    return this.lastEvent;
  }
}

const pct = (x: number): string => `${(x * 100).toFixed(1)} %`;

function addCall(calls: Map<number, [number, number]>, requests: number, ms: number): void {
  if (requests <= 0) return;
  const size = Math.floor(Math.log2(requests));
  const entry = calls.get(size) ?? [0, 0];
  entry[0] += requests;
  entry[1] += ms;
  calls.set(size, entry);
}
