/**
 * Canary by key hash: a stable share of record keys is scored by a candidate version.
 *
 * A request's route is a pure function of its record key: FNV-1a (32-bit) over the key bytes,
 * finished with murmur3's fmix32 so that keys differing only in their last bytes spread over the
 * whole range, divided by 2^32 → [0, 1). Keys whose hash is below `fraction` go to the canary.
 * No seed, no process state: every worker, replica and restart routes a key the same way, so a
 * key always sees the same version. A record without a key is routed by its request id (UTF-8)
 * instead: stable per request, not per caller.
 */

const FNV_OFFSET = 0x811c9dc5;
const FNV_PRIME = 0x01000193;
const encoder = new TextEncoder();

/** FNV-1a 32 of `bytes`, then fmix32; an unsigned 32-bit integer. */
export function keyHash32(bytes: Uint8Array): number {
  let h = FNV_OFFSET;
  for (const b of bytes) {
    h ^= b;
    h = Math.imul(h, FNV_PRIME);
  }
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** The routing point of a key in [0, 1); a null key uses the request id. */
export function routePoint(key: Uint8Array | null | undefined, requestId: string): number {
  const bytes = key ?? encoder.encode(requestId);
  return keyHash32(bytes) / 0x1_0000_0000;
}

export type CanaryRole = 'stable' | 'canary';

export class CanaryRouter {
  constructor(readonly fraction: number) {
    if (!(fraction >= 0 && fraction <= 1)) {
      throw new RangeError(`canary fraction must be within 0..1, got ${fraction}`);
    }
  }

  /** 'canary' when the key's point is below the fraction, else 'stable'. */
  route(key: Uint8Array | null | undefined, requestId: string): CanaryRole {
    return routePoint(key, requestId) < this.fraction ? 'canary' : 'stable';
  }
}
