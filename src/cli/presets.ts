/** `ptq4vit presets`: the timm architectures known by name, with the preprocessing each one implies. */
import { PRESETS, specFromPreset } from '../models/config.js';
import { commandHelp, parse, type CommandSpec } from './args.js';

export const PRESETS_COMMAND: CommandSpec = {
  name: 'presets',
  summary: "list the timm architectures known by name, with timm's eval preprocessing for each",
  synopsis: '[--json]',
  flags: {},
  notes: ['Preprocessing is timm\'s eval transform: resize the shorter side to input/crop (interpolation), center-crop to input, normalize with mean/std.'],
};

const fmt = (xs: readonly number[]): string => xs.join(',');

export function runPresets(args: string[]): void {
  const v = parse(args, PRESETS_COMMAND);
  if (v.help) {
    process.stdout.write(commandHelp(PRESETS_COMMAND));
    return;
  }
  const rows = Object.keys(PRESETS).map((name) => {
    const spec = specFromPreset(name);
    const p = spec.preprocess;
    return { name, timm_class: spec.timmClass, input_size: [spec.arch.inChans, p.inputSize, p.inputSize], crop_pct: p.cropPct, crop_mode: 'center', interpolation: p.interpolation, mean: p.mean, std: p.std };
  });
  const table = [['name', 'class', 'input', 'crop', 'interp.', 'mean', 'std'], ...rows.map((r) => [r.name, r.timm_class, `${r.input_size[1]}×${r.input_size[2]}`, String(r.crop_pct), r.interpolation, fmt(r.mean), fmt(r.std)])];
  const widths = table[0].map((_, c) => Math.max(...table.map((row) => row[c].length)));
  for (const row of table) process.stdout.write(row.map((cell, c) => (c === row.length - 1 ? cell : cell.padEnd(widths[c]))).join('  ') + '\n');
  if (v.json === true) process.stdout.write(JSON.stringify({ command: 'presets', presets: rows }) + '\n');
}
