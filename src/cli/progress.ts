/**
 * Progress of a batch command on stderr: a cli-progress bar on a terminal, otherwise a plain line
 * every few seconds (logs and CI output stay readable). Rate and ETA count only this run's work,
 * so a resumed run does not look faster than it is.
 */
import cliProgress from 'cli-progress';

export interface ProgressOptions {
  /** Shown first, e.g. `score`. */
  label: string;
  /** What is counted, e.g. `records`. */
  unit: string;
  /** Everything to do, including `start`; undefined when not known (no bar end, no ETA). */
  total: number | undefined;
  /** Already done before this run started (a resumed run). */
  start?: number;
  /** A bar when true, plain lines when false. */
  isTTY: boolean;
  /** Where plain lines go. */
  write: (text: string) => void;
  /** The bar's stream. Default process.stderr. */
  stream?: NodeJS.WritableStream;
  /** Plain lines this often. Default 5,000 ms. */
  everyMs?: number;
  now?: () => number;
}

const number = (n: number) => Math.round(n).toLocaleString('en-US');

/** `42 s`, `3 min 5 s`, `1 h 2 min`. */
export function duration(seconds: number): string {
  if (!Number.isFinite(seconds)) return '?';
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

export class Progress {
  private done: number;
  private notes = '';
  private readonly startedAt: number;
  private readonly now: () => number;
  private readonly bar: cliProgress.SingleBar | null = null;
  private readonly timer: NodeJS.Timeout | null = null;
  private stopped = false;

  constructor(private readonly options: ProgressOptions) {
    this.now = options.now ?? Date.now;
    this.startedAt = this.now();
    this.done = options.start ?? 0;
    if (options.isTTY) {
      this.bar = new cliProgress.SingleBar(
        {
          stream: options.stream ?? process.stderr,
          format: `${options.label} [{bar}] {percentage}% | {value}/{total} ${options.unit} | {rate}/s | ETA {left}{notes}`,
          hideCursor: true,
        },
        cliProgress.Presets.shades_classic,
      );
      this.bar.start(options.total ?? 0, this.done, this.payload());
    } else {
      this.timer = setInterval(() => options.write(`${this.line()}\n`), options.everyMs ?? 5000);
      this.timer.unref();
    }
  }

  /** Items per second in this run. */
  rate(): number {
    const seconds = (this.now() - this.startedAt) / 1000;
    const counted = this.done - (this.options.start ?? 0);
    return seconds > 0 ? counted / seconds : 0;
  }

  /** Seconds since this run started. */
  elapsed(): number {
    return (this.now() - this.startedAt) / 1000;
  }

  private eta(): number {
    const { total } = this.options;
    const rate = this.rate();
    if (total === undefined || rate <= 0) return Infinity;
    return (total - this.done) / rate;
  }

  private payload() {
    // Not `eta`: cli-progress fills that token itself (in seconds, from its own samples).
    return {
      rate: number(this.rate()),
      left: duration(this.eta()),
      notes: this.notes === '' ? '' : ` | ${this.notes}`,
    };
  }

  /** `score: 50,000/100,000 records (50.0 %), 4,210/s, ETA 12 s; 3 dead-lettered` */
  line(): string {
    const { label, unit, total } = this.options;
    const of =
      total === undefined
        ? `${number(this.done)} ${unit}`
        : `${number(this.done)}/${number(total)} ${unit} (${total === 0 ? '100.0' : ((100 * this.done) / total).toFixed(1)} %)`;
    const eta = total === undefined ? '' : `, ETA ${duration(this.eta())}`;
    return `${label}: ${of}, ${number(this.rate())}/s${eta}${this.notes === '' ? '' : `; ${this.notes}`}`;
  }

  /** `done` items so far (including `start`); `notes` is shown after the numbers. */
  update(done: number, notes = this.notes): void {
    this.done = done;
    this.notes = notes;
    this.bar?.update(done, this.payload());
  }

  /** Removes the bar or prints the last plain line. Idempotent. */
  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    if (this.bar) {
      this.bar.update(this.done, this.payload());
      this.bar.stop();
    }
    if (this.timer) {
      clearInterval(this.timer);
      this.options.write(`${this.line()}\n`);
    }
  }
}
