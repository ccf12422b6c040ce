/**
 * The long fuzzing run (test/fuzz.test.ts is the short one in `npm test`): seeded mutations of
 * safetensors checkpoints and quantized model files, cards, manifests and images, each required to end
 * in a result or a Ptq4vitError within the time bound. Writes the counts to RESULTS.md.
 *
 *   node dist/scripts/fuzz.js [--scale 10] [--seed 1] [--no-write]
 *
 * Scale 1 is the test suite's run; scale 10 ten times as many cases with other seeds.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { Fuzzer, makeSeeds } from '../test/fuzzing.js';
import { gitRevision, machine, replaceSection } from './markdown.js';

const { values } = parseArgs({ options: { scale: { type: 'string', default: '10' }, seed: { type: 'string', default: '1' }, 'no-write': { type: 'boolean', default: false } } });
const scale = Number(values.scale);
const base = Number(values.seed) * 10_000_000;
if (!(Number.isInteger(scale) && scale >= 1) || !Number.isInteger(base)) throw new Error('--scale and --seed must be positive integers');

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ptq4vit-fuzz-'));
const startedOn = machine();
const start = performance.now();
try {
  const fuzzer = new Fuzzer(await makeSeeds(dir), { caseMs: 5000 });
  const plan: [string, number, (seed: number) => Promise<void>][] = [
    ['safetensors files', 1000 * scale, (s) => fuzzer.safetensorsCase(s)],
    ['cards and hub configs', 200 * scale, (s) => fuzzer.cardCase(s)],
    ['manifests', 150 * scale, (s) => fuzzer.manifestCase(s)],
    ['images', 250 * scale, (s) => fuzzer.imageCase(s)],
  ];
  for (const [k, [what, n, run]] of plan.entries()) {
    for (let i = 0; i < n; i++) {
      await run(base + k * 1_000_000 + i);
      if ((i + 1) % 500 === 0 || i + 1 === n) process.stderr.write(`\r${what}: ${i + 1}/${n}, failures so far ${fuzzer.failures.length}   `);
    }
    process.stderr.write('\n');
  }
  const seconds = (performance.now() - start) / 1000;
  const internal = fuzzer.failures.filter((f) => f.problem.startsWith('internal error')).length;
  const other = fuzzer.failures.length - internal;
  const command = `node dist/scripts/fuzz.js --scale ${scale} --seed ${values.seed}`;
  const lines = [
    `bad inputs tried: ${fuzzer.total}, internal errors: ${internal}, other failures (time bound ${fuzzer.limits.caseMs} ms, memory, unclear message): ${other}`,
    '',
    ...fuzzer.report().split('\n').map((l) => `- ${l}`),
    '',
    `Every case must end in a result or a \`Ptq4vitError\` (the CLI's exit 2). Mutations: byte flips, truncations,`,
    `header size and header JSON edits (dtypes, shapes, data_offsets, dropped and duplicated entries), planted`,
    `NaN/Inf values and extreme integer codes, metadata JSON edits (spec, points, provenance, format) for`,
    `tiny ViT, DeiT and Swin checkpoints and their quantized files; card, hub config.json and manifest JSON edits and array`,
    `truncations; JPEG/PNG/BMP/WebP header, size-field and body edits. \`npm test\` runs scale 1 with other seeds.`,
    '',
    `\`${command}\` · ${seconds.toFixed(0)} s · ${startedOn} · git ${gitRevision()}`,
  ];
  for (const f of fuzzer.failures.slice(0, 20)) console.log(`${f.corpus} seed ${f.seed}: ${f.mutation}\n  → ${f.problem}`);
  console.log(lines.join('\n'));
  if (!values['no-write']) replaceSection('RESULTS.md', 'Fuzzing', lines.join('\n'), '# Results');
  process.exitCode = fuzzer.failures.length === 0 ? 0 : 1;
} finally {
  fs.rmSync(dir, { recursive: true, force: true });
}
