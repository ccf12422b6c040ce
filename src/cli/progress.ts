/**
 * A one-line progress bar on stderr: redrawn in place on a terminal, and on a pipe or in CI a plain
 * line at most every 10% so logs stay readable.
 */
export class ProgressBar {
  private readonly start = performance.now();
  private lastDrawn = -1;
  private readonly tty = process.stderr.isTTY === true;

  constructor(private readonly label: string, private readonly total: number, private readonly unit = 'img', private readonly quiet = false) {}

  update(done: number, extra = ''): void {
    if (this.quiet || this.total <= 0) return;
    const fraction = Math.min(1, done / this.total);
    const seconds = (performance.now() - this.start) / 1000;
    const rate = done / Math.max(seconds, 1e-9);
    const eta = rate > 0 ? (this.total - done) / rate : 0;
    const stats = `${done}/${this.total} ${this.unit} ${rate.toFixed(1)} ${this.unit}/s ${formatSeconds(seconds)}<${formatSeconds(eta)}${extra ? ' ' + extra : ''}`;
    if (this.tty) {
      const width = 28;
      const filled = Math.round(fraction * width);
      const bar = '█'.repeat(filled) + '░'.repeat(width - filled);
      process.stderr.write(`\r${this.label} ${bar} ${(fraction * 100).toFixed(0).padStart(3)}% ${stats}\x1b[K`);
      if (done >= this.total) process.stderr.write('\n');
    } else {
      const decile = Math.floor(fraction * 10);
      if (decile > this.lastDrawn) {
        this.lastDrawn = decile;
        process.stderr.write(`${this.label} ${(fraction * 100).toFixed(0)}% ${stats}\n`);
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
