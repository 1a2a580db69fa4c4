import type { ChalkInstance } from 'chalk';

/** Where a command writes, and whether it may use colour. One instance per run. */
export interface Output {
  out(text: string): void;
  err(text: string): void;
  color: ChalkInstance;
  /** stderr is a terminal: progress messages are worth printing. */
  interactive: boolean;
}

/**
 * Colour only when stdout is a terminal and neither NO_COLOR (https://no-color.org) nor
 * --no-color says otherwise. chalk 5 ignores NO_COLOR, so the rule lives here.
 */
export function colorEnabled(stream: { isTTY?: boolean }, env: NodeJS.ProcessEnv, noColorFlag: boolean): boolean {
  if (noColorFlag) return false;
  if (env.NO_COLOR !== undefined && env.NO_COLOR !== '') return false;
  if (env.FORCE_COLOR !== undefined && env.FORCE_COLOR !== '0') return true;
  return Boolean(stream.isTTY) && env.TERM !== 'dumb';
}

/** Async because chalk is loaded only by commands that print: --help and --version never do. */
export async function createOutput(env: NodeJS.ProcessEnv, noColorFlag: boolean): Promise<Output> {
  const { Chalk } = await import('chalk');
  const color = new Chalk({ level: colorEnabled(process.stdout, env, noColorFlag) ? 1 : 0 });
  return {
    out: (text) => void process.stdout.write(text.endsWith('\n') ? text : `${text}\n`),
    err: (text) => void process.stderr.write(text.endsWith('\n') ? text : `${text}\n`),
    color,
    interactive: Boolean(process.stderr.isTTY),
  };
}
