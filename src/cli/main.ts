/** The `ptq4vit` command line: argument parsing, dispatch, and turning errors into one clear line. */
import { Ptq4vitError } from '../errors.js';
import { PRESETS } from '../models/config.js';
import { USAGE } from './args.js';
import { runDemo } from './demo.js';
import { runEval } from './eval.js';
import { runExport } from './export.js';
import { runQuantize } from './quantize.js';


export async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  try {
    switch (command) {
      case 'eval':
        await runEval(rest);
        return 0;
      case 'quantize':
        await runQuantize(rest);
        return 0;
      case 'export':
        await runExport(rest);
        return 0;
      case 'demo':
        await runDemo(rest);
        return 0;
      case 'presets':
        for (const [name, p] of Object.entries(PRESETS)) console.log(`${name.padEnd(36)} ${p.timmClass}`);
        return 0;
      case undefined:
      case '-h':
      case '--help':
      case 'help':
        process.stdout.write(USAGE);
        return command === undefined ? 2 : 0;
      default:
        throw new Ptq4vitError(`unknown command '${command}'\n\n${USAGE}`);
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
