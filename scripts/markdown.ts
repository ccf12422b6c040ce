/** Helpers for scripts that keep sections of BENCHMARKS.md / RESULTS.md up to date. */
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import { writeFileAtomic } from '../src/io/safetensors.js';

/** Replace the `## heading` section of a markdown file (or append it), keeping everything else. */
export function replaceSection(file: string, heading: string, body: string, title = '# Benchmarks'): void {
  const text = fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : `${title}\n\nEvery number below comes from the command printed beside it, on this project's 2-core machine.\n`;
  const marker = `## ${heading}`;
  const section = `${marker}\n\n${body.trim()}\n`;
  const start = text.indexOf(marker);
  if (start < 0) {
    writeFileAtomic(file, Buffer.from(`${text.trimEnd()}\n\n${section}`));
    return;
  }
  const next = text.indexOf('\n## ', start + marker.length);
  writeFileAtomic(file, Buffer.from(text.slice(0, start) + section + (next < 0 ? '' : text.slice(next))));
}

/** The machine line every benchmark section carries. */
export function machine(): string {
  const cpu = os.cpus()[0]?.model ?? 'unknown CPU';
  const [load1] = os.loadavg();
  return `${os.availableParallelism()} cores (${cpu}), Node ${process.version}, load average ${load1.toFixed(2)} at the start, ${new Date().toISOString().slice(0, 10)}`;
}

/** Run the PyTorch baseline (Debian's PyTorch on the system python) and parse its last JSON line. */
export function pytorchBaseline(args: string[]): Record<string, number | string> | null {
  const python = fs.existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3';
  const run = spawnSync(python, ['scripts/pytorch_baseline.py', ...args], { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
  if (run.status !== 0) {
    console.error(`PyTorch baseline failed (${python} scripts/pytorch_baseline.py ${args.join(' ')}):\n${run.stderr.slice(-2000)}`);
    return null;
  }
  const last = run.stdout.trim().split('\n').pop() ?? '';
  return JSON.parse(last) as Record<string, number | string>;
}

export function gitRevision(): string {
  try {
    return execFileSync('git', ['rev-parse', '--short', 'HEAD'], { encoding: 'utf8' }).trim();
  } catch {
    return 'unknown';
  }
}
