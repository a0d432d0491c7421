// `bridle` entry point: looks up the subcommand and runs it. Commands load lazily so that
// `bridle mcp` does not pay for the kernel addon and `bridle run` does not load gRPC.
import type { Command } from './command.js';
import { UsageError } from './command.js';

/** Subcommands in the order `bridle --help` lists them; each lives in ./commands/<name>.ts. */
const commands = ['run', 'demo', 'agent', 'attach', 'doctor', 'policy', 'collector', 'events', 'lineage', 'sessions', 'certs', 'mcp'];

async function load(name: string): Promise<Command | undefined> {
  if (!commands.includes(name)) return undefined;
  try {
    return ((await import(`./commands/${name}.js`)) as { default: Command }).default;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ERR_MODULE_NOT_FOUND' && String(err).includes(`commands/${name}`)) {
      return undefined;
    }
    throw err;
  }
}

async function usage(): Promise<string> {
  const lines = ['usage: bridle <command> [flags]', '', 'Commands:'];
  for (const name of commands) {
    const cmd = await load(name);
    if (cmd) lines.push(`  ${name.padEnd(10)} ${cmd.summary}`);
  }
  lines.push('', 'Run `bridle <command> --help` for the flags of one command.');
  return lines.join('\n');
}

export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === '--help' || name === '-h' || name === 'help') {
    process.stdout.write((await usage()) + '\n');
    return name ? 0 : 2;
  }
  const cmd = await load(name);
  if (!cmd) {
    process.stderr.write(`bridle: unknown command '${name}'\n\n${await usage()}\n`);
    return 2;
  }
  const own = rest.includes('--') ? rest.slice(0, rest.indexOf('--')) : rest;
  if (own.includes('--help') || own.includes('-h')) {
    process.stdout.write(cmd.help.trimEnd() + '\n');
    return 0;
  }
  try {
    return await cmd.run(rest);
  } catch (err) {
    if (err instanceof UsageError) {
      process.stderr.write(`bridle ${name}: ${err.message}\nSee 'bridle ${name} --help'.\n`);
      return 2;
    }
    const e = err as Error & { code?: string };
    process.stderr.write(`bridle ${name}: ${e.message}\n`);
    if (process.env.BRIDLE_DEBUG) process.stderr.write(`${e.stack}\n`);
    return 1;
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err) => {
    process.stderr.write(`bridle: ${(err as Error).stack}\n`);
    process.exitCode = 1;
  },
);
