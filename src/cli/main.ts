/** The `ptq4vit` command line: argument parsing, dispatch, and turning errors into one clear line. */
import fs from 'node:fs';
import path from 'node:path';
import { Ptq4vitError } from '../errors.js';
import { commandHelp, type CommandSpec } from './args.js';
import { DEMO_COMMAND, runDemo } from './demo.js';
import { EVAL_COMMAND, runEval } from './eval.js';
import { EXPORT_COMMAND, runExport } from './export.js';
import { packageRoot } from './paths.js';
import { PRESETS_COMMAND, runPresets } from './presets.js';
import { QUANTIZE_COMMAND, runQuantize } from './quantize.js';

interface Command {
  spec: CommandSpec;
  run(args: string[]): Promise<void> | void;
}

/** Every command: its flag table (for parsing and --help) and what runs it. A new command is one entry. */
const COMMANDS: Command[] = [
  { spec: DEMO_COMMAND, run: runDemo },
  { spec: QUANTIZE_COMMAND, run: runQuantize },
  { spec: EVAL_COMMAND, run: runEval },
  { spec: EXPORT_COMMAND, run: runExport },
  { spec: PRESETS_COMMAND, run: runPresets },
];

export function version(): string {
  return (JSON.parse(fs.readFileSync(path.join(packageRoot, 'package.json'), 'utf8')) as { version: string }).version;
}

export function usage(): string {
  const width = Math.max(...COMMANDS.map((c) => c.spec.name.length)) + 2;
  return [
    'ptq4vit — post-training quantization of vision transformers (PTQ4ViT)',
    '',
    'Usage: ptq4vit <command> [options]',
    '',
    'Commands:',
    ...COMMANDS.map((c) => `  ${c.spec.name.padEnd(width)}${c.spec.summary}`),
    '',
    "Run 'ptq4vit <command> --help' for a command's options and their defaults.",
    '  -h, --help     this help',
    '  --version      print the version',
    '',
  ].join('\n');
}

export async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  try {
    const found = COMMANDS.find((c) => c.spec.name === command);
    if (found) {
      await found.run(rest);
      return 0;
    }
    switch (command) {
      case '--version':
        process.stdout.write(`ptq4vit ${version()}\n`);
        return 0;
      case 'help': {
        const topic = COMMANDS.find((c) => c.spec.name === rest[0]);
        process.stdout.write(topic ? commandHelp(topic.spec) : usage());
        return 0;
      }
      case undefined:
      case '-h':
      case '--help':
        process.stdout.write(usage());
        return command === undefined ? 2 : 0;
      default:
        throw new Ptq4vitError(`unknown command '${command}' (commands: ${COMMANDS.map((c) => c.spec.name).join(', ')}); see 'ptq4vit --help'`);
    }
  } catch (e) {
    if (e instanceof Ptq4vitError) {
      process.stderr.write(`ptq4vit: error: ${e.message}\n`);
      return 2;
    }
    process.stderr.write(`ptq4vit: internal error: ${(e as Error).message}\n(this is a bug; set PTQ4VIT_DEBUG=1 for the stack trace)\n`);
    if (process.env.PTQ4VIT_DEBUG) process.stderr.write(`${(e as Error).stack}\n`);
    return 1;
  }
}
