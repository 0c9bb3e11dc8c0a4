import { describe, expect, it } from 'vitest';
import { OffsetTracker } from '../../src/worker/offsets.js';

const p0 = { topic: 't', partition: 0 };
const p1 = { topic: 't', partition: 1 };

describe('OffsetTracker', () => {
  it('commits nothing before the first acknowledgement', () => {
    const tracker = new OffsetTracker();
    tracker.track(p0, '10');
    expect(tracker.committable()).toEqual([]);
  });

  it('never commits past an unacknowledged offset', () => {
    const tracker = new OffsetTracker();
    ['10', '11', '12'].forEach((o) => tracker.track(p0, o));
    tracker.ack(p0, '12');
    tracker.ack(p0, '11');
    expect(tracker.committable()).toEqual([]);
    tracker.ack(p0, '10');
    expect(tracker.committable()).toEqual([{ ...p0, offset: '13' }]);
    expect(tracker.pending).toBe(0);
  });

  it('commits up to the first gap per partition, each only when it moved', () => {
    const tracker = new OffsetTracker();
    ['0', '1', '2'].forEach((o) => tracker.track(p0, o));
    ['5', '6'].forEach((o) => tracker.track(p1, o));
    tracker.ack(p0, '0');
    tracker.ack(p0, '2');
    tracker.ack(p1, '5');
    const first = tracker.committable();
    expect(first).toEqual([
      { ...p0, offset: '1' },
      { ...p1, offset: '6' },
    ]);
    tracker.markCommitted(first);
    expect(tracker.committable()).toEqual([]);
    tracker.ack(p0, '1');
    expect(tracker.committable()).toEqual([{ ...p0, offset: '3' }]);
  });

  it('handles 64-bit offsets', () => {
    const tracker = new OffsetTracker();
    tracker.track(p0, '9007199254740993');
    tracker.ack(p0, '9007199254740993');
    expect(tracker.committable()).toEqual([{ ...p0, offset: '9007199254740994' }]);
  });

  it('forgets revoked partitions and ignores their late acknowledgements', () => {
    const tracker = new OffsetTracker();
    tracker.track(p0, '0');
    tracker.track(p1, '0');
    tracker.retain([p1]);
    tracker.ack(p0, '0');
    tracker.ack(p1, '0');
    expect(tracker.committable()).toEqual([{ ...p1, offset: '1' }]);
    expect(tracker.pending).toBe(0);
  });

  it('stays correct across queue compaction', () => {
    const tracker = new OffsetTracker();
    for (let i = 0; i < 5000; i++) tracker.track(p0, String(i));
    for (let i = 0; i < 4999; i++) tracker.ack(p0, String(i));
    expect(tracker.committable()).toEqual([{ ...p0, offset: '4999' }]);
    expect(tracker.pending).toBe(1);
    tracker.ack(p0, '4999');
    expect(tracker.committable()).toEqual([{ ...p0, offset: '5000' }]);
  });

  it('says, per partition, from which offset and how many records are still unanswered', () => {
    const tracker = new OffsetTracker();
    for (let i = 10; i < 15; i++) tracker.track(p0, String(i));
    tracker.track(p1, '3');
    tracker.ack(p0, '10');
    tracker.ack(p0, '12');
    tracker.ack(p1, '3');
    expect(tracker.unanswered()).toEqual([{ ...p0, from: '11', count: 3 }]);
  });

  it('refuses an offset it tracks already, so a record read twice is answered once', () => {
    const tracker = new OffsetTracker();
    expect(tracker.track(p0, '5')).toBe(true);
    expect(tracker.track(p0, '6')).toBe(true);
    expect(tracker.track(p0, '5')).toBe(false);
    expect(tracker.track(p0, '7')).toBe(true);
    expect(tracker.pending).toBe(3);
  });
});
