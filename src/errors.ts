/**
 * The one error type the core throws on purpose. The CLI maps `kind` to an exit code in
 * exactly one place (src/cli/exit.ts); nothing in the core prints or exits.
 */
export type FailureKind =
  | 'usage' // bad flag, malformed id, bad config file
  | 'connection' // could not reach or authenticate to the server
  | 'schema' // the schema map does not match the database
  | 'timeout' // statement_timeout or lock_timeout fired
  | 'permission' // the role may not do what the command needs
  | 'interrupted' // Ctrl-C
  | 'refused' // the command ran and deliberately declined (e.g. a live lease without --steal)
  | 'not-found' // a named row does not exist
  | 'database'; // any other server error, reported in its own words

export class QueueDoctorError extends Error {
  readonly kind: FailureKind;
  /** Optional next step printed after the message. */
  readonly hint: string | undefined;

  constructor(kind: FailureKind, message: string, hint?: string) {
    super(message);
    this.name = 'QueueDoctorError';
    this.kind = kind;
    this.hint = hint;
  }
}

export function usageError(message: string, hint?: string): QueueDoctorError {
  return new QueueDoctorError('usage', message, hint);
}
