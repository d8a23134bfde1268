/**
 * Structured logs (pino, JSON lines on stderr). Logs never carry personal data: engines log ids,
 * counts and file names only, and these keys are censored wherever they appear as a safety net.
 */
import pino from 'pino'

export type Logger = pino.Logger

const PII_KEYS = [
  'phone', 'phone_number', 'first_name', 'last_name', 'middle_name', 'name', 'date_of_birth', 'dob', 'address',
  'address1', 'address2', 'fields', 'raw', 'row', 'personalisation', 'email',
]

export const REDACT_PATHS = PII_KEYS.flatMap((k) => [k, `*.${k}`])

export function createLogger(level: string, destination: pino.DestinationStream = pino.destination(2)): Logger {
  return pino({ level, base: undefined, redact: { paths: REDACT_PATHS, censor: '[redacted]' } }, destination)
}

/**
 * An error as it may be logged or stored: a database error by its SQLSTATE and kind only, since
 * PostgreSQL quotes the offending value in its message (a date of birth, a name).
 */
export function errorText(err: unknown): string {
  const e = err as { code?: unknown; message?: unknown; table?: unknown; column?: unknown }
  // SQLSTATEs are five characters with at least one digit; errno names (EXDEV, EPERM) have none.
  if (typeof e?.code === 'string' && /^(?=.*\d)[0-9A-Z]{5}$/.test(e.code)) {
    const where = [e.table, e.column].filter((x) => typeof x === 'string').join('.')
    return `database error ${e.code}${where ? ` on ${where}` : ''} (${SQLSTATE_CLASS[e.code.slice(0, 2)] ?? 'see PostgreSQL error codes'})`
  }
  return typeof e?.message === 'string' ? e.message : String(err)
}

const SQLSTATE_CLASS: Record<string, string> = {
  '08': 'connection exception', '22': 'data exception', '23': 'integrity constraint violation',
  '25': 'invalid transaction state', '40': 'transaction rollback', '53': 'insufficient resources',
  '54': 'program limit exceeded', '57': 'operator intervention', '58': 'system error', XX: 'internal error',
}
