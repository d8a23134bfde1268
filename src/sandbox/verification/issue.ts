/**
 * What the verification server does with one issue request (one item of a batch): validate it, refuse a
 * used uuid, spend the quota, maybe fail on purpose, otherwise make a code and "text" it (append it to
 * the ledger). Every outcome is an answer with its HTTP status; nothing here knows about HTTP routes.
 */
import { randomBytes } from 'node:crypto'

/** Error codes and their HTTP statuses. Validation refusals are 400; the rest are the server's bad days. */
export const STATUS = {
  unparsable_request: 400, invalid_test_type: 400, missing_date: 400, invalid_date: 400,
  missing_phone: 400, phone_number_invalid: 400,
  uuid_already_exists: 409,
  quota_exceeded: 429, maintenance_mode: 429,
  internal_server_error: 500, sms_failure: 500,
  sms_queue_full: 503,
} as const
export type ErrorCode = keyof typeof STATUS

/** The failures a sandbox can inject, drawn in this order from one draw per item. */
export const INJECTABLE = ['sms_failure', 'internal_server_error', 'maintenance_mode', 'sms_queue_full'] as const
export type Injectable = (typeof INJECTABLE)[number]

const MESSAGES: Record<ErrorCode, string> = {
  unparsable_request: 'unable to parse request',
  invalid_test_type: 'invalid test type',
  missing_date: 'missing either test or symptom date',
  invalid_date: 'date must be a valid YYYY-MM-DD date',
  missing_phone: 'missing phone number',
  phone_number_invalid: 'phone number is not a valid E.164 number',
  uuid_already_exists: 'code for the given uuid already exists',
  quota_exceeded: 'exceeded daily realm quota configured by the realm administrator',
  maintenance_mode: 'this realm is currently in maintenance mode',
  internal_server_error: 'internal server error (injected by the sandbox)',
  sms_failure: 'failed to send sms (injected by the sandbox)',
  sms_queue_full: 'sms queue is full (injected by the sandbox)',
}

export interface LedgerEntry { phone: string; uuid: string; code: string; testType: string; testDate?: string; symptomDate?: string; tzOffset: number; at: number }

export interface IssuedItem {
  uuid: string; code: string; expiresAt: string; expiresAtTimestamp: number
  longExpiresAt: string; longExpiresAtTimestamp: number; padding: string
}
export interface FailedItem { uuid: string; error: string; errorCode: ErrorCode; padding: string }
export interface Answer { status: number; body: IssuedItem | FailedItem }

export interface IssuerKnobs { failures: Record<string, number>; quota?: { perMinute: number } }
export interface IssuerStats { items: number; issued: number; conflicts409: number; itemErrors: Record<string, number> }

const TEST_TYPES = new Set(['confirmed', 'likely', 'negative'])
const E164 = /^\+[1-9]\d{7,14}$/
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i
const WINDOW_MS = 60_000
// The real server's defaults: a short code lives 15 minutes, the long code in the SMS link a day.
const SHORT_LIFE_MS = 15 * 60_000
const LONG_LIFE_MS = 24 * 60 * 60_000

export class Issuer {
  readonly ledger: LedgerEntry[] = []
  private readonly usedUuids = new Set<string>()
  private readonly codes = new Set<string>()
  private windowStart = -1
  private spent = 0

  constructor(
    private readonly knobs: IssuerKnobs,
    private readonly stats: IssuerStats,
    private readonly failureDraw: () => number,
    private readonly codeDraw: () => number,
  ) {}

  /** Codes still allowed in the quota window that holds `at`; Infinity without a quota. */
  remaining(at: number): number {
    const quota = this.knobs.quota
    if (!quota) return Infinity
    this.roll(at)
    return Math.max(0, quota.perMinute - this.spent)
  }

  /** Codes are counted per window even without a quota, so a quota turned on mid-window sees them. */
  private roll(at: number): void {
    const start = windowStart(at)
    if (start !== this.windowStart) {
      this.windowStart = start
      this.spent = 0
    }
  }

  /** Attempts one item at sandbox time `at`. Only a success texts a code and uses up its uuid. */
  issue(raw: unknown, at: number): Answer {
    this.stats.items++
    const uuid = isObject(raw) && typeof raw.uuid === 'string' ? raw.uuid : ''
    const checked = check(raw)
    if (typeof checked === 'string') return this.fail(uuid, checked)
    if (this.usedUuids.has(checked.uuid.toLowerCase())) return this.fail(uuid, 'uuid_already_exists')
    if (this.remaining(at) <= 0) return this.fail(uuid, 'quota_exceeded')
    const injected = this.drawFailure()
    if (injected) return this.fail(uuid, injected)

    const code = this.newCode()
    this.usedUuids.add(checked.uuid.toLowerCase())
    this.roll(at)
    this.spent++
    this.stats.issued++
    const { phone, uuid: id, testType, testDate, symptomDate, tzOffset } = checked
    this.ledger.push({ phone, uuid: id, code, testType, ...(testDate && { testDate }), ...(symptomDate && { symptomDate }), tzOffset, at })
    const short = at + SHORT_LIFE_MS
    const long = at + LONG_LIFE_MS
    return {
      status: 200,
      body: {
        uuid, code, expiresAt: rfc1123(short), expiresAtTimestamp: Math.floor(short / 1000),
        longExpiresAt: rfc1123(long), longExpiresAtTimestamp: Math.floor(long / 1000), padding: padding(),
      },
    }
  }

  private fail(uuid: string, errorCode: ErrorCode): Answer {
    this.stats.itemErrors[errorCode] = (this.stats.itemErrors[errorCode] ?? 0) + 1
    if (errorCode === 'uuid_already_exists') this.stats.conflicts409++
    return { status: STATUS[errorCode], body: { uuid, error: MESSAGES[errorCode], errorCode, padding: padding() } }
  }

  /** One draw per item, and none at all while every probability is 0, so a seed's draws stay put. */
  private drawFailure(): Injectable | undefined {
    const p = INJECTABLE.map((k) => Math.max(0, Number(this.knobs.failures[k]) || 0))
    if (p.every((x) => x === 0)) return undefined
    const r = this.failureDraw()
    let sum = 0
    for (let i = 0; i < INJECTABLE.length; i++) {
      sum += p[i]
      if (r < sum) return INJECTABLE[i]
    }
    return undefined
  }

  private newCode(): string {
    for (;;) {
      const code = String(Math.floor(this.codeDraw() * 100_000_000)).padStart(8, '0')
      if (!this.codes.has(code)) {
        this.codes.add(code)
        return code
      }
    }
  }
}

/** The request fields of a valid item, or the error code of its first problem (checked in this order). */
function check(raw: unknown): Omit<LedgerEntry, 'code' | 'at'> | ErrorCode {
  if (!isObject(raw)) return 'unparsable_request'
  if (typeof raw.testType !== 'string' || !TEST_TYPES.has(raw.testType)) return 'invalid_test_type'
  const testDate = absent(raw.testDate) ? undefined : raw.testDate
  const symptomDate = absent(raw.symptomDate) ? undefined : raw.symptomDate
  if (testDate === undefined && symptomDate === undefined) return 'missing_date'
  if ((testDate !== undefined && !isDate(testDate)) || (symptomDate !== undefined && !isDate(symptomDate))) return 'invalid_date'
  if (absent(raw.phone)) return 'missing_phone'
  if (typeof raw.phone !== 'string' || !E164.test(raw.phone)) return 'phone_number_invalid'
  if (typeof raw.uuid !== 'string' || !UUID.test(raw.uuid)) return 'unparsable_request'
  const tzOffset = absent(raw.tzOffset) ? 0 : raw.tzOffset
  if (typeof tzOffset !== 'number' || !Number.isFinite(tzOffset)) return 'unparsable_request'
  return {
    phone: raw.phone, uuid: raw.uuid, testType: raw.testType, tzOffset,
    ...(testDate !== undefined && { testDate: testDate as string }),
    ...(symptomDate !== undefined && { symptomDate: symptomDate as string }),
  }
}

// The real server reads JSON into Go structs, where a missing field, null and "" are all the zero value.
const absent = (v: unknown) => v === undefined || v === null || v === ''

function isDate(v: unknown): v is string {
  if (typeof v !== 'string' || !/^\d{4}-\d\d-\d\d$/.test(v)) return false
  const d = new Date(`${v}T00:00:00Z`)
  return !Number.isNaN(d.getTime()) && d.toISOString().slice(0, 10) === v
}

export const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v)

/** Quota windows are aligned to whole minutes of the sandbox clock. */
export const windowStart = (at: number) => Math.floor(at / WINDOW_MS) * WINDOW_MS
export const windowEnd = (at: number) => windowStart(at) + WINDOW_MS

/** Go's time.RFC1123 of a UTC time, as the real server formats expiresAt. */
const rfc1123 = (ms: number) => new Date(ms).toUTCString().replace(/GMT$/, 'UTC')

/** Random base64, as the real server pads answers so their size tells an observer nothing. */
export const padding = () => randomBytes(12 + Math.floor(Math.random() * 24)).toString('base64')

