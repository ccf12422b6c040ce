/**
 * A one-line progress bar on stderr: redrawn in place on a terminal, and on a pipe or in CI a plain
 * line at most every 10% so logs stay readable.
 *
 * Rate and ETA are measured from the bar's first update on, never from its construction: a bar is often made
 * before its work starts (the search's while recording and sensitivities run) or after its first unit ended
 * (a recording pass's), and either origin turns the first lines' rate and ETA into nonsense (26 minutes
 * left of a 20-second search; 43917 img/s). Until a second update at least MIN_RATE_SECONDS later, both read '?'.
 */
export interface ProgressOptions {
  /** What is counted ('img', 'layers', …). */
  unit?: string;
  /** Print nothing (e.g. --json on a pipe). */
  quiet?: boolean;
  /** For tests: the clock (ms), where lines go, and whether that is a terminal. */
  now?: () => number;
  write?: (text: string) => void;
  tty?: boolean;
}

const MIN_RATE_SECONDS = 0.5;

export class ProgressBar {
  private readonly unit: string;
  private readonly quiet: boolean;
  private readonly now: () => number;
  private readonly write: (text: string) => void;
  /** Whether the bar redraws one line in place (a terminal) rather than printing lines. */
  readonly tty: boolean;
  private readonly start: number;
  /** The first update: where rate and ETA are measured from. */
  private origin: { ms: number; done: number } | null = null;
  private lastDrawn = -1;

  constructor(private readonly label: string, private readonly total: number, options: ProgressOptions = {}) {
    this.unit = options.unit ?? 'img';
    this.quiet = options.quiet ?? false;
    this.now = options.now ?? (() => performance.now());
    this.write = options.write ?? ((text) => process.stderr.write(text));
    this.tty = options.tty ?? process.stderr.isTTY === true;
    this.start = this.now();
  }

  update(done: number, extra = ''): void {
    if (this.quiet || this.total <= 0) return;
    const ms = this.now();
    this.origin ??= { ms, done };
    const fraction = Math.min(1, done / this.total);
    const seconds = (ms - this.start) / 1000;
    const measured = (ms - this.origin.ms) / 1000;
    const rate = measured >= MIN_RATE_SECONDS && done > this.origin.done ? (done - this.origin.done) / measured : null;
    const eta = done >= this.total ? '0s' : rate === null ? '?' : formatSeconds((this.total - done) / rate);
    const stats = `${done}/${this.total} ${this.unit} ${rate === null ? '?' : rate.toFixed(1)} ${this.unit}/s ${formatSeconds(seconds)}<${eta}${extra ? ' ' + extra : ''}`;
    if (this.tty) {
      const width = 28;
      const filled = Math.round(fraction * width);
      const bar = '█'.repeat(filled) + '░'.repeat(width - filled);
      this.write(`\r${this.label} ${bar} ${(fraction * 100).toFixed(0).padStart(3)}% ${stats}\x1b[K`);
      if (done >= this.total) this.write('\n');
    } else {
      const decile = Math.floor(fraction * 10);
      if (decile > this.lastDrawn) {
        this.lastDrawn = decile;
        this.write(`${this.label} ${(fraction * 100).toFixed(0)}% ${stats}\n`);
      }
    }
  }
}

export function formatSeconds(s: number): string {
  if (!Number.isFinite(s)) return '?';
  if (s < 60) return `${s.toFixed(0)}s`;
  const m = Math.floor(s / 60);
  return m < 60 ? `${m}m${String(Math.round(s % 60)).padStart(2, '0')}s` : `${Math.floor(m / 60)}h${String(m % 60).padStart(2, '0')}m`;
}
