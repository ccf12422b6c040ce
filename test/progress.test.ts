import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { formatSeconds, ProgressBar } from '../src/cli/progress.js';
import { calibrationProgress } from '../src/cli/quantize.js';

/** A bar on a fake clock (seconds) writing into an array. */
function fakeBar(total: number, options: { unit?: string; quiet?: boolean; tty?: boolean } = {}) {
  let seconds = 0;
  const lines: string[] = [];
  const bar = new ProgressBar('job', total, { ...options, now: () => seconds * 1000, write: (t) => lines.push(t), tty: options.tty ?? false });
  return { bar, lines, at: (s: number) => (seconds = s) };
}

describe('progress bar', () => {
  test('rate and ETA come from the work between updates, not from when the bar was made', () => {
    // Made 20 s before its work starts (as the search bar of a mixed run was, while sensitivities ran).
    const { bar, lines, at } = fakeBar(80, { unit: 'layers' });
    at(20);
    bar.update(8, 'first');
    // One update measures no rate: '?', not 8 layers / 20 s and an ETA of 3 minutes.
    assert.equal(lines.at(-1), 'job 10% 8/80 layers ? layers/s 20s<? first\n');
    at(24);
    bar.update(16, 'second');
    // 8 layers in the 4 s since the first update: 2 layers/s, 64 left → 32 s.
    assert.equal(lines.at(-1), 'job 20% 16/80 layers 2.0 layers/s 24s<32s second\n');
    at(56);
    bar.update(80, 'last');
    assert.equal(lines.at(-1), 'job 100% 80/80 layers 2.0 layers/s 56s<0s last\n');
  });

  test('updates closer together than half a second give no rate yet (no 43917 img/s from a 1 ms gap)', () => {
    const { bar, lines, at } = fakeBar(56);
    at(0.001);
    bar.update(8);
    at(0.002);
    bar.update(16);
    assert.match(lines.at(-1)!, /16\/56 img \? img\/s 0s<\?\n$/);
    at(1.001);
    bar.update(24);
    // 16 images in the 1 s since the first update; 32 left → 2 s.
    assert.match(lines.at(-1)!, /24\/56 img 16\.0 img\/s 1s<2s\n$/);
  });

  test('a pipe gets a line at most every 10%; a terminal a redrawn line ending in a newline; quiet nothing', () => {
    const pipe = fakeBar(100);
    for (let d = 1; d <= 100; d++) (pipe.at(d), pipe.bar.update(d));
    assert.equal(pipe.lines.length, 11, pipe.lines.join(''));
    assert.ok(pipe.lines.every((l) => !l.includes('\r')));

    const term = fakeBar(4, { tty: true });
    for (let d = 1; d <= 4; d++) (term.at(d), term.bar.update(d));
    assert.equal(term.lines.length, 5);
    assert.ok(term.lines.slice(0, 4).every((l) => l.startsWith('\rjob ') && l.endsWith('\x1b[K')));
    assert.equal(term.lines[4], '\n');

    const quiet = fakeBar(4, { quiet: true });
    quiet.bar.update(2);
    assert.deepEqual(quiet.lines, []);
  });

  test('formatSeconds', () => {
    assert.equal(formatSeconds(59.4), '59s');
    assert.equal(formatSeconds(61), '1m01s');
    assert.equal(formatSeconds(3 * 3600 + 5 * 60), '3h05m');
    assert.equal(formatSeconds(Infinity), '?');
  });
});

describe('calibration progress', () => {
  const events = [
    ...[8, 16].map((images) => ({ phase: 'record' as const, group: 1, groups: 2, images, totalImages: 16 })),
    { phase: 'search' as const, done: 1, total: 3, point: 'a' },
    // Pipelined: group 2 is recorded while group 1's other points are searched.
    { phase: 'record' as const, group: 2, groups: 2, images: 8, totalImages: 16 },
    { phase: 'search' as const, done: 2, total: 3, point: 'b' },
    { phase: 'record' as const, group: 2, groups: 2, images: 16, totalImages: 16 },
    { phase: 'search' as const, done: 3, total: 3, point: 'c' },
  ];
  const run = (tty: boolean) => {
    const out: string[] = [];
    const progress = calibrationProgress('W8A8', 3, false, { tty, write: (t) => out.push(t), now: () => 0 })!;
    for (const e of events) progress(e);
    return out;
  };

  test('on a terminal, a recording that runs during the search rides on the search line (one line redrawn, not two in turn)', () => {
    const out = run(true);
    // Group 1's recording has its own bar (nothing else runs yet); group 2's does not.
    assert.ok(out.some((t) => t.startsWith('\rW8A8 record 1/2 ')));
    assert.ok(!out.some((t) => t.includes('record 2/2')), out.join(''));
    assert.ok(out.some((t) => t.startsWith('\rW8A8 search ') && t.includes(' 1/3 layers ') && t.includes('a · recording 2/2: 8/16 img')), out.join(''));
    assert.match(out.at(-2)!, /^\rW8A8 search .* 3\/3 layers .* c\x1b\[K$/);
  });

  test('on a pipe, every recording keeps its own lines', () => {
    const out = run(false);
    assert.ok(out.some((t) => t.startsWith('W8A8 record 2/2 100% 16/16 img')), out.join(''));
    assert.ok(!out.some((t) => t.includes('· recording')));
  });
});
