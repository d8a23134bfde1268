/** Claiming notices in a state (with a lease), and recording what became of them. */
import type { Db, Queryable } from '../db/types.ts'

export interface Notice {
  id: string
  personId: string
  episodeStart: string
  testType: string
  testDate: string | null
  symptomDate: string | null
  phone: string | null
  phoneE164: string | null
  uuid: string | null
  attempts: number
  reason: string | null
  createdAt: string
}

const LEASE_SECONDS = 300
/** Attempts (lookup or issue) before a notice ends not sent, `out_of_attempts`. */
export const MAX_ATTEMPTS = 12

export async function claimNotices(db: Db, state: 'pending' | 'phone_checked', limit: number): Promise<Notice[]> {
  const rows = await db.query(
    `UPDATE exposure_notices n SET claimed_until = now() + make_interval(secs => $3)
     FROM people p
     WHERE n.id IN (SELECT id FROM exposure_notices
                    WHERE state = $1 AND (retry_at IS NULL OR retry_at <= now()) AND (claimed_until IS NULL OR claimed_until < now())
                    ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED)
       AND p.id = n.person_id
     RETURNING n.id::text, n.person_id::text, n.episode_start::text, n.test_type, n.test_date::text, n.symptom_date::text,
       p.phone, n.phone_e164, n.uuid::text, n.attempts, n.reason, n.created_at`, [state, limit, LEASE_SECONDS])
  return rows.map((r) => ({
    id: r.id, personId: r.person_id, episodeStart: r.episode_start, testType: r.test_type, testDate: r.test_date,
    symptomDate: r.symptom_date, phone: r.phone, phoneE164: r.phone_e164, uuid: r.uuid, attempts: r.attempts, reason: r.reason,
    createdAt: new Date(r.created_at).toISOString(),
  }))
}

/** One notice's new state, as recorded with others of its batch in one transaction. */
export interface Change {
  id: string
  state: 'pending' | 'phone_checked' | 'issued' | 'not_sent'
  reason?: string | null
  phoneE164?: string
  uuid?: string
  expiresAt?: Date
  /** Try again after this many seconds (the state stays). */
  retryIn?: number
  /** Whether the try spent an attempt (a 429 or a quota wait does not). */
  attempt?: boolean
  event: { kind: string; detail?: object }
}

export async function record(db: Db, changes: Change[]) {
  if (changes.length === 0) return
  await db.transaction(async (tx: Queryable) => {
    await tx.query(
      `UPDATE exposure_notices n SET state = c.state, reason = c.reason, claimed_until = NULL,
         phone_e164 = coalesce(c.phone_e164, n.phone_e164), uuid = coalesce(c.uuid, n.uuid),
         expires_at = coalesce(c.expires_at, n.expires_at), attempts = n.attempts + CASE WHEN c.attempt THEN 1 ELSE 0 END,
         retry_at = CASE WHEN c.retry_in IS NULL THEN NULL ELSE now() + make_interval(secs => c.retry_in) END, updated_at = now()
       FROM json_to_recordset($1::json) AS c(id bigint, state text, reason text, phone_e164 text, uuid uuid, expires_at timestamptz,
         retry_in double precision, attempt boolean)
       WHERE n.id = c.id`,
      [JSON.stringify(changes.map((c) => ({
        id: c.id, state: c.state, reason: c.reason ?? null, phone_e164: c.phoneE164 ?? null, uuid: c.uuid ?? null,
        expires_at: c.expiresAt?.toISOString() ?? null, retry_in: c.retryIn ?? null, attempt: c.attempt ?? false,
      })))])
    await tx.copyInto('exposure_events', ['notice_id', 'kind', 'detail'], changes.map((c) => [c.id, c.event.kind, c.event.detail ?? null]))
  })
}

/** Seconds before the next try after `attempts` failed ones: 30 s doubling, at most an hour. */
export const backoff = (attempts: number) => Math.min(30 * 2 ** Math.max(0, attempts - 1), 3600)
