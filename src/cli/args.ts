/**
 * Flag parsing and help shared by the commands. A command is one table of flags (type, meaning,
 * default): the parser, `--help` and the error messages all come from it, so a new command is one
 * `CommandSpec` plus its run function registered in main.ts.
 *
 * Parsing is strict: unknown flags, a flag without its value, or a stray argument end in one line
 * that points at the command's `--help`. A value may start with a dash when it is a number
 * (`--seed -1` reaches the range check and gets our own message).
 */
import { Ptq4vitError } from '../errors.js';
import { setOrtThreads } from '../tensor/ort.js';

export interface FlagSpec {
  /** A string flag takes a value; a boolean flag is a switch. */
  type: 'string' | 'boolean';
  /** What the value looks like in the help, e.g. `N`, `file`. */
  value?: string;
  /** What the flag means. */
  help: string;
  /** The default as the help shows it; absent for flags without one. */
  default?: string;
  /** Must be given (shown in the help; checked by requireFlag). */
  required?: boolean;
  short?: string;
}

export type FlagTable = Record<string, FlagSpec>;

/** --config / --arch for commands that also open float checkpoints (eval, export). */
export const FLOAT_CHECKPOINT_FLAGS: FlagTable = {
  config: { type: 'string', value: 'card.json', help: 'JSON model card for a float checkpoint' },
  arch: { type: 'string', value: 'preset', help: "timm architecture by name for a float checkpoint ('ptq4vit presets' lists them)" },
  'img-size': { type: 'string', value: 'N', help: "run a float timm checkpoint at N×N input: ViT position embeddings resampled as timm's resample_abs_pos_embed (bicubic, antialiased, prefix tokens kept); the quantized file records it" },
};

/** --img-size N, validated (undefined when not given). */
export function imgSizeFlag(values: Values): number | undefined {
  return intFlag(values, 'img-size', undefined, 1, 2048);
}

export interface CommandSpec {
  name: string;
  /** One line: what the command does (the global usage lists it). */
  summary: string;
  /** Synopsis lines after `ptq4vit <name>`. */
  synopsis: string;
  flags: FlagTable;
  /** Paragraphs printed after the flags. */
  notes?: string[];
}

export type Values = Record<string, string | boolean | undefined>;

export const COMMON_FLAGS: FlagTable = {
  threads: { type: 'string', value: 'N', help: 'threads for the matrix kernels', default: 'all cores' },
  json: { type: 'boolean', help: 'print one JSON object as the last line of stdout' },
  help: { type: 'boolean', short: 'h', help: 'show this help and exit' },
};

export const seeHelp = (command: string): string => `see 'ptq4vit ${command} --help'`;

/** A value may begin with '-' only when it is a number, so `--model --calib x` is a missing value. */
const NUMERIC_VALUE = /^-\.?\d/;

export function parse(args: string[], command: CommandSpec): Values {
  const flags: FlagTable = { ...command.flags, ...COMMON_FLAGS };
  const fail = (message: string): never => {
    throw new Ptq4vitError(`${message}; ${seeHelp(command.name)}`);
  };
  const values: Values = {};
  for (let i = 0; i < args.length; i++) {
    const arg = args[i];
    let name: string;
    let inline: string | undefined;
    if (arg.startsWith('--') && arg.length > 2) {
      const eq = arg.indexOf('=');
      name = eq < 0 ? arg.slice(2) : arg.slice(2, eq);
      inline = eq < 0 ? undefined : arg.slice(eq + 1);
    } else if (/^-[A-Za-z]$/.test(arg)) {
      const found = Object.entries(flags).find(([, f]) => f.short === arg.slice(1));
      name = found ? found[0] : fail(`unknown option '${arg}'`);
    } else {
      return fail(`unexpected argument '${arg}' (options start with --)`);
    }
    const spec = flags[name];
    if (!spec) return fail(`unknown option '--${name}'`);
    if (spec.type === 'boolean') {
      if (inline !== undefined) fail(`--${name} takes no value, got '${inline}'`);
      values[name] = true;
      continue;
    }
    if (inline === undefined) {
      const next = args[i + 1];
      if (next === undefined || (next.startsWith('-') && !NUMERIC_VALUE.test(next))) fail(`--${name} needs a value <${spec.value ?? 'value'}>`);
      inline = next;
      i++;
    }
    values[name] = inline;
  }
  return values;
}

/** Word-wrap `text` to `width` columns, continuation lines indented by `indent`. */
function wrap(text: string, indent: number, width = 100): string {
  const words = text.split(' ');
  const lines: string[] = [];
  let line = '';
  for (const w of words) {
    if (line && indent + line.length + 1 + w.length > width) {
      lines.push(line);
      line = w;
    } else line = line ? `${line} ${w}` : w;
  }
  lines.push(line);
  return lines.join(`\n${' '.repeat(indent)}`);
}

function flagLines(table: FlagTable): string[] {
  const heads = Object.entries(table).map(([name, f]) => `${f.short ? `-${f.short}, ` : ''}--${name}${f.type === 'string' ? ` <${f.value ?? 'value'}>` : ''}`);
  const width = Math.max(...heads.map((h) => h.length)) + 2;
  return Object.values(table).map((f, i) => {
    const extra = f.required ? ' (required)' : f.default !== undefined ? ` (default: ${f.default})` : '';
    return `  ${heads[i].padEnd(width)}${wrap(f.help + extra, width + 2)}`;
  });
}

/** `ptq4vit <command> --help`: synopsis, every flag with its meaning and default, notes. */
export function commandHelp(command: CommandSpec): string {
  const lines = [`ptq4vit ${command.name} — ${command.summary}`, '', 'Usage:', `  ptq4vit ${command.name} ${command.synopsis}`];
  if (Object.keys(command.flags).length) lines.push('', 'Options:', ...flagLines(command.flags));
  lines.push('', 'Common options:', ...flagLines(COMMON_FLAGS));
  for (const note of command.notes ?? []) lines.push('', wrap(note, 0));
  return lines.join('\n') + '\n';
}

/** A decimal integer flag within [min, max], or the default when absent (no 1e1, 0x8, ' 8'). */
export function intFlag(values: Values, name: string, fallback: number | undefined, min = 1, max = Number.MAX_SAFE_INTEGER): number | undefined {
  const raw = values[name];
  if (raw === undefined) return fallback;
  const n = typeof raw === 'string' && /^-?\d+$/.test(raw) ? Number(raw) : NaN;
  if (!Number.isSafeInteger(n) || n < min || n > max) {
    const range = max === Number.MAX_SAFE_INTEGER ? `≥ ${min}` : `from ${min} to ${max}`;
    throw new Ptq4vitError(`--${name} must be an integer ${range}, got '${raw}'`);
  }
  return n;
}

/** A decimal number flag within [min, max] (digits and one point: no exponent, hex or spaces). */
export function numberFlag(values: Values, name: string, fallback: number | undefined, min: number, max: number): number | undefined {
  const raw = values[name];
  if (raw === undefined) return fallback;
  const n = typeof raw === 'string' && /^-?(\d+\.?\d*|\.\d+)$/.test(raw) ? Number(raw) : NaN;
  if (!Number.isFinite(n) || n < min || n > max) throw new Ptq4vitError(`--${name} must be a number from ${min} to ${max}, got '${raw}'`);
  return n;
}

export function requireFlag(values: Values, name: string, command: string): string {
  const v = values[name];
  if (typeof v !== 'string' || v === '') throw new Ptq4vitError(`${command}: --${name} is required; ${seeHelp(command)}`);
  return v;
}

export function applyCommon(values: Values): void {
  const threads = intFlag(values, 'threads', undefined, 1, 256);
  if (threads !== undefined) setOrtThreads(threads);
}
