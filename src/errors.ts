/**
 * A problem with the user's input (a file, a flag, a dataset) that we can explain in one sentence.
 * The CLI prints `message` without a stack trace; anything that is not a Ptq4vitError is a bug.
 */
export class Ptq4vitError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'Ptq4vitError';
  }
}

export function fail(message: string): never {
  throw new Ptq4vitError(message);
}
