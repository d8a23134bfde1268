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
