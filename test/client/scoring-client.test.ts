/**
 * The correlation logic of ScoringClient over a fake transport: which answer settles which call,
 * timeouts, aborts, close, and how a burst of calls is sent.
 */
import { afterEach, describe, expect, it, vi } from 'vitest';
import {
  ScoringClient,
  type Answer,
  type OutgoingRequest,
  type ScoringCodec,
  type ScoringTransport,
} from '../../src/client/scoring-client.js';
import { ScoringError } from '../../src/client/errors.js';
import { HEADER } from '../../src/worker/headers.js';

/** Requests and results as JSON text: enough to see what the client sent and decoded. */
const codec: ScoringCodec = {
  topic: 'requests',
  resultTopic: 'results',
  idField: 'id',
  encodeRequest: async (record) => Buffer.from(JSON.stringify(record)),
  decodeResult: async (value) => JSON.parse(value.toString()) as Record<string, unknown>,
};

class FakeTransport implements ScoringTransport {
  sends: OutgoingRequest[][] = [];
  onAnswer: ((answer: Answer) => Promise<void>) | null = null;
  closed = 0;
  failSends: Error | null = null;

  async start(onAnswer: (answer: Answer) => Promise<void>): Promise<void> {
    this.onAnswer = onAnswer;
  }

  async send(requests: OutgoingRequest[]): Promise<void> {
    if (this.failSends) throw this.failSends;
    this.sends.push(requests);
  }

  async close(): Promise<void> {
    this.closed++;
  }

  get sent(): OutgoingRequest[] {
    return this.sends.flat();
  }

  /** The worker's answer to `id`: a result echoing the request, as the real one does. */
  result(id: string, fields: Record<string, unknown> = {}): Promise<void> {
    return this.onAnswer!({
      kind: 'result',
      value: Buffer.from(JSON.stringify({ id, ...fields })),
      headers: { [HEADER.correlationId]: Buffer.from(id) },
    });
  }

  deadLetter(id: string, code: string, message: string, sourceTopic = 'requests'): Promise<void> {
    return this.onAnswer!({
      kind: 'deadLetter',
      value: Buffer.from('original'),
      headers: {
        [HEADER.correlationId]: Buffer.from(id),
        [HEADER.errorCode]: Buffer.from(code),
        [HEADER.errorCategory]: Buffer.from('unprocessable'),
        [HEADER.errorMessage]: Buffer.from(message),
        [HEADER.sourceTopic]: Buffer.from(sourceTopic),
      },
    });
  }
}

/** Lets queued sends go out: they wait for encoding (promises) and then one event-loop turn. */
async function sendsGoOut(): Promise<void> {
  for (let turn = 0; turn < 3; turn++) await new Promise((resolve) => setImmediate(resolve));
}

async function connect(timeoutMs = 30_000) {
  const transport = new FakeTransport();
  const client = await ScoringClient.withTransport(transport, { codec, timeoutMs });
  return { transport, client };
}

describe('ScoringClient', () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it('resolves each call with the result carrying its correlation id, whatever the order', async () => {
    const { transport, client } = await connect();
    const calls = [1, 2, 3].map((n) => client.score({ id: `r-${n}`, n }));
    await sendsGoOut();
    expect(client.inFlight).toBe(3);
    await transport.result('r-3', { label: 'three' });
    await transport.result('r-1', { label: 'one' });
    await transport.result('r-2', { label: 'two' });
    expect(await Promise.all(calls)).toEqual([
      { id: 'r-1', label: 'one' },
      { id: 'r-2', label: 'two' },
      { id: 'r-3', label: 'three' },
    ]);
    expect(client.inFlight).toBe(0);
  });

  it('sends a burst of calls in one produce request, keyed by the id unless a key is given', async () => {
    const { transport, client } = await connect();
    const calls = [
      client.score({ id: 'a' }),
      client.score({ id: 'b' }, { key: 'customer-7', headers: { traceparent: 'x' } }),
      client.score({ id: 'c' }, { key: null }),
    ];
    await sendsGoOut();
    expect(transport.sends).toHaveLength(1);
    expect(transport.sent.map((r) => r.key)).toEqual(['a', 'customer-7', null]);
    expect(transport.sent[1]!.headers).toEqual({ traceparent: 'x' });
    for (const id of ['a', 'b', 'c']) await transport.result(id);
    await Promise.all(calls);
  });

  it('fills a missing id with a random UUID and uses it as the key', async () => {
    const { transport, client } = await connect();
    const call = client.score({ n: 1 });
    await sendsGoOut();
    const sent = JSON.parse(transport.sent[0]!.value.toString()) as { id: string };
    expect(sent.id).toMatch(/^[0-9a-f-]{36}$/);
    expect(transport.sent[0]!.key).toBe(sent.id);
    await transport.result(sent.id);
    await expect(call).resolves.toEqual({ id: sent.id });
  });

  it('ignores answers for ids it is not waiting for (another client’s)', async () => {
    const { transport, client } = await connect();
    const call = client.score({ id: 'mine' });
    await sendsGoOut();
    await transport.result('theirs');
    await transport.deadLetter('theirs', 'WRONG_SHAPE', 'nope');
    expect(client.inFlight).toBe(1);
    await transport.result('mine', { ok: true });
    await expect(call).resolves.toEqual({ id: 'mine', ok: true });
  });

  it('rejects with DEAD_LETTERED carrying the worker’s code and message', async () => {
    const { transport, client } = await connect();
    const call = client.score({ id: 'bad' });
    await sendsGoOut();
    await transport.deadLetter('bad', 'WRONG_SHAPE', 'input "pixels" has shape [3]');
    const err = (await call.catch((e: unknown) => e)) as ScoringError;
    expect(err).toBeInstanceOf(ScoringError);
    expect(err).toMatchObject({
      code: 'DEAD_LETTERED',
      requestId: 'bad',
      workerCode: 'WRONG_SHAPE',
      workerMessage: 'input "pixels" has shape [3]',
      category: 'unprocessable',
      retriable: false,
    });
    expect(err.headers[HEADER.sourceTopic]).toBe('requests');
  });

  it('ignores a dead letter with its id from another request topic', async () => {
    const { transport, client } = await connect();
    const call = client.score({ id: 'file:0' });
    await sendsGoOut();
    await transport.deadLetter('file:0', 'WRONG_SHAPE', 'other topic', 'other-requests');
    expect(client.inFlight).toBe(1);
    await transport.result('file:0');
    await expect(call).resolves.toEqual({ id: 'file:0' });
  });

  it('takes the first answer and drops a duplicate of it', async () => {
    const { transport, client } = await connect();
    const call = client.score({ id: 'x' });
    await sendsGoOut();
    await transport.result('x', { n: 1 });
    await transport.result('x', { n: 2 });
    await transport.deadLetter('x', 'MODEL_FAILED', 'late');
    await expect(call).resolves.toEqual({ id: 'x', n: 1 });
  });

  it('rejects with TIMEOUT when nothing arrives in time, and a late answer is ignored', async () => {
    vi.useFakeTimers();
    const { transport, client } = await connect(1000);
    const slow = client.score({ id: 'slow' });
    const quick = client.score({ id: 'quick' }, { timeoutMs: 100 });
    const quickErr = quick.catch((e: unknown) => e);
    await vi.advanceTimersByTimeAsync(100);
    expect(await quickErr).toMatchObject({ code: 'TIMEOUT', requestId: 'quick', retriable: true });
    expect(client.inFlight).toBe(1);
    const slowErr = slow.catch((e: unknown) => e);
    await vi.advanceTimersByTimeAsync(900);
    expect(await slowErr).toMatchObject({ code: 'TIMEOUT', requestId: 'slow' });
    await transport.result('slow');
    expect(client.inFlight).toBe(0);
  });

  it('does not send a request that timed out while waiting to be sent', async () => {
    const { transport, client } = await connect();
    // The first send hangs until released: later requests wait in the queue meanwhile.
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    const send = transport.send.bind(transport);
    transport.send = async (requests) => {
      await gate;
      await send(requests);
    };
    const first = client.score({ id: 'first' });
    await sendsGoOut();
    const queued = client.score({ id: 'queued' }, { timeoutMs: 1 });
    await expect(queued).rejects.toMatchObject({ code: 'TIMEOUT' });
    release();
    await sendsGoOut();
    expect(transport.sent.map((r) => r.key)).toEqual(['first']);
    await transport.result('first');
    await expect(first).resolves.toEqual({ id: 'first' });
  });

  it('rejects with the abort reason when the signal fires, and at once when already aborted', async () => {
    const { client } = await connect();
    const controller = new AbortController();
    const call = client.score({ id: 'a' }, { signal: controller.signal });
    controller.abort(new Error('user gave up'));
    await expect(call).rejects.toThrow('user gave up');
    expect(client.inFlight).toBe(0);
    await expect(client.score({ id: 'b' }, { signal: controller.signal })).rejects.toThrow(
      'user gave up',
    );
  });

  it('refuses a second call with an id that is still waiting', async () => {
    const { transport, client } = await connect();
    const first = client.score({ id: 'same' });
    await expect(client.score({ id: 'same' })).rejects.toMatchObject({ code: 'DUPLICATE_ID' });
    await sendsGoOut();
    await transport.result('same');
    await expect(first).resolves.toEqual({ id: 'same' });
    // Once answered, the id may be used again.
    const again = client.score({ id: 'same' });
    await sendsGoOut();
    await transport.result('same');
    await expect(again).resolves.toEqual({ id: 'same' });
  });

  it('rejects the calls of a failed send with SEND_FAILED', async () => {
    const { transport, client } = await connect();
    transport.failSends = new Error('broker gone');
    const calls = [client.score({ id: 'a' }), client.score({ id: 'b' })];
    for (const call of calls) {
      await expect(call).rejects.toMatchObject({ code: 'SEND_FAILED', retriable: true });
    }
    expect(client.inFlight).toBe(0);
  });

  it('passes the codec’s error on when the record does not fit, and keeps the id free', async () => {
    const failing: ScoringCodec = {
      ...codec,
      encodeRequest: async () => {
        throw new TypeError('invalid "inputs"');
      },
    };
    const client = await ScoringClient.withTransport(new FakeTransport(), { codec: failing });
    await expect(client.score({ id: 'a' })).rejects.toThrow('invalid "inputs"');
    expect(client.inFlight).toBe(0);
  });

  it('rejects a result it cannot decode with RESULT_UNREADABLE', async () => {
    const { transport, client } = await connect();
    const call = client.score({ id: 'a' });
    await sendsGoOut();
    await transport.onAnswer!({
      kind: 'result',
      value: Buffer.from('not json'),
      headers: { [HEADER.correlationId]: 'a' },
    });
    await expect(call).rejects.toMatchObject({ code: 'RESULT_UNREADABLE', requestId: 'a' });
  });

  it('close() rejects pending calls with CLIENT_CLOSED, closes the transport once, refuses new calls', async () => {
    const { transport, client } = await connect();
    const calls = [client.score({ id: 'a' }), client.score({ id: 'b' })];
    await sendsGoOut();
    await Promise.all([client.close(), client.close()]);
    for (const call of calls) await expect(call).rejects.toMatchObject({ code: 'CLIENT_CLOSED' });
    await client.close();
    expect(transport.closed).toBe(1);
    expect(client.inFlight).toBe(0);
    await expect(client.score({ id: 'c' })).rejects.toMatchObject({ code: 'CLIENT_CLOSED' });
  });
});
