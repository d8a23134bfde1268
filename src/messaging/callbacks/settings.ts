/**
 * A service's callbacks, as GOV.UK Notify's service callback API keeps them: one URL and bearer token
 * for delivery statuses, one for received texts (service_callbacks). The token is sealed: Herald sends
 * it in each callback's Authorization header and never shows it again (not in the API, the CLI or
 * the console). What the CLI, the API (routes.ts) and the console's Callbacks page call.
 */
import type { Queryable } from '../../db/types.ts'
import type { Sealer } from '../../privacy/seal.ts'
import { callbackQueue } from './queue.ts'

export const CALLBACK_KINDS = ['delivery_status', 'inbound_sms'] as const
export type CallbackKind = (typeof CALLBACK_KINDS)[number]
export const isCallbackKind = (k: unknown): k is CallbackKind => CALLBACK_KINDS.includes(k as CallbackKind)

/** Notify's rule for a bearer token (service_callback_api_schema: minLength 10). */
export const MIN_TOKEN = 10
const MAX_URL = 2000
const MAX_TOKEN = 1000

/** A problem with one field of a callback, named as the API names the field. */
export interface CallbackProblem { field: 'kind' | 'url' | 'bearer_token'; message: string }

const LOOPBACK = /^(localhost|127(\.\d{1,3}){3}|\[::1\])$/i

/**
 * Notify's checks: an https URL (http only to this machine's loopback, for tests and the sandboxes),
 * a token of at least 10 characters. Messages name the field and never echo the token (nor the URL,
 * which may carry credentials of its own).
 */
export function checkCallback(input: { kind?: unknown; url?: unknown; bearer_token?: unknown }): CallbackProblem[] {
  const problems: CallbackProblem[] = []
  if (input.kind === undefined || input.kind === null) problems.push({ field: 'kind', message: 'kind is a required property' })
  else if (!isCallbackKind(input.kind)) problems.push({ field: 'kind', message: `kind is not one of [${CALLBACK_KINDS.join(', ')}]` })
  if (input.url === undefined || input.url === null || input.url === '') problems.push({ field: 'url', message: 'url is a required property' })
  else if (typeof input.url !== 'string' || !validUrl(input.url)) problems.push({ field: 'url', message: 'url is not a valid https url' })
  if (input.bearer_token === undefined || input.bearer_token === null || input.bearer_token === '') problems.push({ field: 'bearer_token', message: 'bearer_token is a required property' })
  else if (typeof input.bearer_token !== 'string') problems.push({ field: 'bearer_token', message: 'bearer_token is not of type string' })
  else if (input.bearer_token.length < MIN_TOKEN) problems.push({ field: 'bearer_token', message: `bearer_token is too short: at least ${MIN_TOKEN} characters` })
  else if (input.bearer_token.length > MAX_TOKEN || /[\r\n\0]/.test(input.bearer_token)) problems.push({ field: 'bearer_token', message: 'bearer_token is not a token a header can carry' })
  return problems
}

function validUrl(text: string): boolean {
  if (text.length > MAX_URL || /\s/.test(text)) return false
  let u: URL
  try {
    u = new URL(text)
  } catch {
    return false
  }
  if (!u.hostname) return false
  return u.protocol === 'https:' || (u.protocol === 'http:' && LOOPBACK.test(u.hostname))
}

export interface CallbackSetting { kind: CallbackKind; url: string; updatedAt: string }

/** Sets (or replaces) a service's callback of one kind. Check it first (checkCallback). */
export async function setCallback(db: Queryable, sealer: Sealer, serviceId: string, kind: CallbackKind, url: string, token: string): Promise<CallbackSetting> {
  const [r] = await db.query(
    `INSERT INTO service_callbacks (service_id, kind, url, token_ct) VALUES ($1, $2, $3, $4)
     ON CONFLICT (service_id, kind) DO UPDATE SET url = excluded.url, token_ct = excluded.token_ct, updated_at = now()
     RETURNING kind, url, updated_at`, [serviceId, kind, url, sealer.seal(token)])
  return setting(r)
}

/** Removes a service's callback of one kind; false when it had none. Callbacks already queued then fail, visibly. */
export async function removeCallback(db: Queryable, serviceId: string, kind: CallbackKind): Promise<boolean> {
  return (await db.query(`DELETE FROM service_callbacks WHERE service_id = $1 AND kind = $2 RETURNING kind`, [serviceId, kind])).length > 0
}

/** A service's callbacks: their URLs, never their tokens. */
export async function listCallbacks(db: Queryable, serviceId: string): Promise<CallbackSetting[]> {
  return (await db.query(`SELECT kind, url, updated_at FROM service_callbacks WHERE service_id = $1 ORDER BY kind`, [serviceId])).map(setting)
}

const setting = (r: Record<string, any>): CallbackSetting => ({ kind: r.kind, url: r.url, updatedAt: new Date(r.updated_at).toISOString() })

export interface CallbackFailure { id: string; kind: CallbackKind; subjectId: string; status: string | null; attempts: number; error: string | null; failedAt: string }

/** A service's callbacks that failed for good, newest first: what it was about, the answer or error, when. */
export async function callbackFailures(db: Queryable, serviceId: string, limit = 20): Promise<CallbackFailure[]> {
  const rows = await db.query(
    `SELECT id::text, kind, subject_id, status, attempts, last_error, failed_at FROM ${callbackQueue.table}
     WHERE service_id = $1 AND failed_at IS NOT NULL ORDER BY failed_at DESC, id DESC LIMIT $2`, [serviceId, limit])
  return rows.map((r) => ({ id: r.id, kind: r.kind, subjectId: r.subject_id, status: r.status, attempts: r.attempts, error: r.last_error,
    failedAt: new Date(r.failed_at).toISOString() }))
}

/** How many of a service's callbacks wait to be sent (due or backing off). */
export async function callbacksWaiting(db: Queryable, serviceId: string): Promise<number> {
  const [r] = await db.query(`SELECT count(*)::int AS n FROM ${callbackQueue.table} WHERE service_id = $1 AND sent_at IS NULL AND failed_at IS NULL`, [serviceId])
  return r.n
}
