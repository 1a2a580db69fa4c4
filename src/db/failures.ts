import { QueueDoctorError, type FailureKind } from '../errors.js';

interface DriverError {
  code?: string;
  message?: string;
  errno?: number;
  address?: string;
  port?: number;
  table?: string;
  column?: string;
}

/** SQLSTATEs and socket errors an operator can act on, in their words rather than the server's. */
const SQLSTATE_MESSAGES: Record<string, { kind: FailureKind; message: (error: DriverError) => string; hint?: string }> = {
  '28P01': { kind: 'connection', message: () => 'authentication failed: wrong password for this user', hint: 'check the password in --database-url, DATABASE_URL or PGPASSWORD' },
  '28000': { kind: 'connection', message: (e) => `the server refused this login: ${e.message}`, hint: 'check pg_hba.conf and the user name' },
  '3D000': { kind: 'connection', message: (e) => `${e.message}`, hint: 'check the database name in the connection string' },
  '57P03': { kind: 'connection', message: () => 'the server is starting up or shutting down; try again shortly' },
  '53300': { kind: 'connection', message: () => 'the server has no free connection slots (too many clients)' },
  '57014': { kind: 'timeout', message: () => 'a query ran longer than --statement-timeout and was cancelled', hint: 'raise --statement-timeout, or look for a blocker with `queue-doctor inspect --check workers`' },
  '55P03': { kind: 'timeout', message: () => 'a lock could not be taken within --lock-timeout', hint: 'another session holds it; `queue-doctor inspect --check workers` lists idle-in-transaction holders' },
  '40P01': { kind: 'timeout', message: () => 'deadlock detected; nothing was changed' },
  '40001': { kind: 'timeout', message: () => 'a concurrent change conflicted with this transaction; nothing was changed, run it again' },
  '42501': { kind: 'permission', message: (e) => `permission denied: ${e.message}`, hint: 'run as a role with the needed privileges' },
  '25006': { kind: 'permission', message: () => 'this connection is read-only (a standby, or default_transaction_read_only)' },
  '42P01': { kind: 'schema', message: (e) => `${e.message}`, hint: 'set the table names in queue-doctor.config.json' },
  '42703': { kind: 'schema', message: (e) => `${e.message}`, hint: 'set the column names in queue-doctor.config.json' },
  '42883': { kind: 'schema', message: (e) => `${e.message}`, hint: 'check "claimFunction" in queue-doctor.config.json' },
  '3F000': { kind: 'schema', message: (e) => `${e.message}`, hint: 'check "schema" in queue-doctor.config.json' },
  '22P02': { kind: 'schema', message: (e) => `a value has the wrong type for its column: ${e.message}`, hint: 'check the schema map in queue-doctor.config.json' },
};

const SOCKET_MESSAGES: Record<string, string> = {
  ECONNREFUSED: 'connection refused: no PostgreSQL server is listening there',
  ENOTFOUND: 'the database host name could not be resolved',
  EAI_AGAIN: 'the database host name could not be resolved (DNS lookup failed)',
  ETIMEDOUT: 'timed out connecting to the database',
  ECONNRESET: 'the server closed the connection',
  EHOSTUNREACH: 'the database host is unreachable',
};

/**
 * Turns any error thrown while talking to the database into a QueueDoctorError with one plain
 * line, or returns null when it is not a database error (a bug, which the CLI reports as such).
 */
export function describeDatabaseError(error: unknown): QueueDoctorError | null {
  if (error instanceof QueueDoctorError) return error;
  if (!error || typeof error !== 'object') return null;
  const driverError = error as DriverError;
  const code = driverError.code;
  if (code && SQLSTATE_MESSAGES[code]) {
    const known = SQLSTATE_MESSAGES[code]!;
    return new QueueDoctorError(known.kind, known.message(driverError), known.hint);
  }
  if (code && SOCKET_MESSAGES[code]) {
    const where = driverError.address ? ` (${driverError.address}${driverError.port ? `:${driverError.port}` : ''})` : '';
    return new QueueDoctorError('connection', `${SOCKET_MESSAGES[code]}${where}`, 'check --database-url, DATABASE_URL or the PG* variables');
  }
  const message = driverError.message ?? '';
  if (/timeout expired|Connection terminated due to connection timeout/i.test(message)) {
    return new QueueDoctorError('connection', 'timed out connecting to the database (--connect-timeout)', 'check the host and port, and that the server accepts connections');
  }
  if (/Connection terminated unexpectedly/i.test(message)) {
    return new QueueDoctorError('connection', 'the server closed the connection unexpectedly');
  }
  if (/password authentication|SASL|client password must be a string|no pg_hba\.conf entry/i.test(message)) {
    return new QueueDoctorError('connection', `authentication failed: ${message.split('\n')[0]}`);
  }
  if (/Invalid URL|invalid connection string|getaddrinfo/i.test(message)) {
    return new QueueDoctorError('usage', 'the connection string is not a valid postgres:// URL');
  }
  if (typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code)) {
    // Any other SQLSTATE: the server's own first line is the clearest we have.
    return new QueueDoctorError('database', `the database reported: ${message.split('\n')[0]} (SQLSTATE ${code})`);
  }
  return null;
}
