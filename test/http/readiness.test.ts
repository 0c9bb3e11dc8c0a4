import { describe, expect, it } from 'vitest';
import { Readiness, type ReadinessState } from '../../src/http/readiness.js';

describe('Readiness', () => {
  it('is ready only once the model is warm and the consumer holds partitions', () => {
    const readiness = new Readiness();
    expect(readiness.ready).toBe(false);
    expect(readiness.state().failing).toEqual([
      'model: not loaded and warmed up yet',
      'kafka: consumer has not joined its group yet',
    ]);

    readiness.modelWarmed();
    expect(readiness.ready).toBe(false);
    expect(readiness.state().checks).toMatchObject({ model: 'ready', kafka: 'joining' });

    readiness.assigned(0);
    expect(readiness.ready).toBe(false);
    expect(readiness.state().failing).toEqual([
      'kafka: consumer joined its group but has no partition assigned',
    ]);

    readiness.assigned(3);
    expect(readiness.ready).toBe(true);
    expect(readiness.state()).toEqual({
      ready: true,
      checks: { model: 'ready', kafka: 'assigned', partitions: 3, stopping: false },
      failing: [],
    });
  });

  it('partitions before the model: still waits for the model', () => {
    const readiness = new Readiness();
    readiness.assigned(2);
    expect(readiness.ready).toBe(false);
    expect(readiness.state().failing).toEqual(['model: not loaded and warmed up yet']);
    readiness.modelWarmed();
    expect(readiness.ready).toBe(true);
  });

  it('turns not ready when the connection is lost and ready again after a rejoin', () => {
    const readiness = new Readiness();
    readiness.modelWarmed();
    readiness.assigned(4);
    readiness.connectionLost('consumer crashed: Connection error; restarting');
    expect(readiness.ready).toBe(false);
    expect(readiness.state().checks.kafka).toBe('connection-lost');
    expect(readiness.state().failing).toEqual([
      'kafka: consumer lost its connection (consumer crashed: Connection error; restarting); waiting for it to rejoin',
    ]);
    readiness.assigned(4);
    expect(readiness.ready).toBe(true);
  });

  it('a model that warms again (a swap) never makes it unready', () => {
    const readiness = new Readiness();
    readiness.modelWarmed();
    readiness.assigned(1);
    readiness.modelWarmed();
    expect(readiness.ready).toBe(true);
  });

  it('is not ready while stopping, even when rejoined', () => {
    const readiness = new Readiness();
    readiness.modelWarmed();
    readiness.assigned(1);
    readiness.stopping();
    expect(readiness.ready).toBe(false);
    readiness.assigned(1);
    expect(readiness.ready).toBe(false);
    expect(readiness.state().failing).toEqual(['stopping: draining in-flight requests']);
  });

  it('tells listeners about each change between ready and not ready, once', () => {
    const readiness = new Readiness();
    const seen: ReadinessState[] = [];
    const off = readiness.onChange((state) => seen.push(state));
    readiness.modelWarmed();
    readiness.assigned(2);
    readiness.assigned(3); // still ready: no event
    readiness.connectionLost('consumer disconnected');
    readiness.connectionLost('consumer crashed'); // still not ready: no event
    readiness.assigned(3);
    off();
    readiness.stopping();
    expect(seen.map((s) => s.ready)).toEqual([true, false, true]);
  });
});
