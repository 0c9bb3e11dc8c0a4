/**
 * `streamscore replay` without a broker: how --from/--to are read, and the configuration
 * mistakes it refuses before reaching Kafka (exit 78, as the rest of the CLI).
 */
import { Command } from 'commander';
import { describe, expect, it } from 'vitest';
import { parsePosition, registerReplayCommand, runReplay } from '../../src/cli/replay.js';
import { silentLogger } from '../../src/telemetry/logger.js';

describe('replay positions', () => {
  it('reads offsets, epoch milliseconds, ISO times and the two ends', () => {
    expect(parsePosition('0')).toEqual({ kind: 'offset', offset: 0n });
    expect(parsePosition('199')).toEqual({ kind: 'offset', offset: 199n });
    expect(parsePosition('999999999999')).toEqual({ kind: 'offset', offset: 999999999999n });
    expect(parsePosition('1714564800000')).toEqual({ kind: 'time', ms: 1714564800000 });
    expect(parsePosition('2024-05-01T12:00:00Z')).toEqual({ kind: 'time', ms: 1714564800000 });
    expect(parsePosition('2024-05-01T14:00:00+02:00')).toEqual({ kind: 'time', ms: 1714564800000 });
    expect(parsePosition('earliest')).toEqual({ kind: 'earliest' });
    expect(parsePosition('latest')).toEqual({ kind: 'latest' });
  });

  it('refuses anything else', () => {
    for (const text of ['-1', 'yesterday', '12abc', '', '2024-13-45']) {
      expect(() => parsePosition(text), text).toThrow(/offset|ISO 8601/);
    }
  });

  it('says in --help that --to is exclusive', () => {
    const program = new Command().exitOverride();
    registerReplayCommand(program);
    const help = program.commands.find((c) => c.name() === 'replay')!.helpInformation();
    expect(help).toMatch(/--to <position>\s+end of the range, EXCLUSIVE/);
    expect(help).toContain('--model-version <version>');
  });
});

describe('replay configuration', () => {
  async function run(flags: Partial<Parameters<typeof runReplay>[0]>, env: NodeJS.ProcessEnv) {
    const stderr: string[] = [];
    const code = await runReplay(
      {
        topic: 'streamscore.requests',
        from: { kind: 'offset', offset: 0n },
        into: 'replayed',
        ...flags,
      },
      {
        stdout: () => undefined,
        stderr: (t) => stderr.push(t),
        isTTY: false,
        env,
        log: silentLogger,
      },
    );
    return { code, stderr: stderr.join('') };
  }

  it('needs brokers', async () => {
    const { code, stderr } = await run({}, {});
    expect(code).toBe(78);
    expect(stderr).toMatch(/CONFIG/);
  });

  it('reads only a request topic of the configuration (its codec and model come from there)', async () => {
    const { code, stderr } = await run(
      { topic: 'elsewhere' },
      { STREAMSCORE_KAFKA_BROKERS: '127.0.0.1:1' },
    );
    expect(code).toBe(78);
    expect(stderr).toContain('--topic elsewhere is not one of topics.requests');
  });
});
