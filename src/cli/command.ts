// Contract for one `bridle` subcommand: src/cli/commands/<name>.ts default-exports a Command.
export interface Command {
  /** One line for `bridle --help`. */
  summary: string;
  /** Full help text for `bridle <name> --help`: usage line, what it does, every flag, an example. */
  help: string;
  /** Runs the command; resolves to the process exit status. Throw UsageError for bad flags. */
  run(argv: string[]): Promise<number>;
}

/** Bad command-line input: printed as "bridle <cmd>: <message>" plus a hint to --help, exit status 2. */
export class UsageError extends Error {
  override name = 'UsageError';
}
