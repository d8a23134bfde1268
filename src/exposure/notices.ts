/**
 * Claiming notices through the work queue (checkQueue, issueQueue in queue.ts), and recording what
 * became of them: a decision moves the notice on (finish), a failed try waits or fails for good (fail).
 *
 * Attempts: each step has its own budget. finish() resets attempts when a notice moves from the
 * phone check to issue, so a lookup outage does not eat into the tries issue gets (the two talk to
 * different services); a notice gets spec.retry.maxAttempts of each.
 */
import type { Db, Queryable } from '../db/types.ts'
import { claim, fail, finish, release, type Failure, type QueueSpec } from '../engine/queue.ts'

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
  /** What the last failed try met ('quota', 'lookup 500', …), or null. */
  lastError: string | null
  createdAt: string
}

export async function claimNotices(db: Db, spec: QueueSpec, worker: string, limit: number): Promise<Notice[]> {
  const rows = await claim(db, spec, worker, limit, {
    // The phone is the person's, as it is now: read at claim, never copied onto the notice.
    returning: `t.person_id::text AS person_id, t.episode_start::text AS episode_start, t.test_type, t.test_date::text AS test_date,
      t.symptom_date::text AS symptom_date, (SELECT p.phone FROM people p WHERE p.id = t.person_id) AS phone, t.phone_e164,
      t.uuid::text AS uuid, t.last_error, t.created_at`,
  })
  return rows.map((r) => ({
    id: r.id, personId: r.person_id, episodeStart: r.episode_start, testType: r.test_type, testDate: r.test_date,
    symptomDate: r.symptom_date, phone: r.phone, phoneE164: r.phone_e164, uuid: r.uuid, attempts: r.attempts, lastError: r.last_error,
    createdAt: new Date(r.created_at).toISOString(),
  }))
}

/** A decision: the notice moves on (phone_checked, issued) or ends not sent with the reason. */
export interface Decided {
  id: string
  state: 'phone_checked' | 'issued' | 'not_sent'
  reason?: string | null
  phoneE164?: string
  uuid?: string
  expiresAt?: Date
  event: { kind: string; detail?: object }
}

/**
 * A failed try: backs off (an attempt), waits as told (`postponeSeconds`, no attempt: a 429, the
 * quota), or, `permanent`, ends not sent for `detail.reason` (the spec's onFailed reads it).
 */
export interface Failed { id: string; failure: Omit<Failure, 'id'> }

export type Change = Decided | Failed

export const isFailed = (c: Change): c is Failed => 'failure' in c

/**
 * Records a batch's changes in one transaction, on the notices this worker still holds; returns
 * counts by outcome. A notice another worker took meanwhile is not recorded (`taken_over`): its
 * new holder records its own outcome.
 */
export async function record(db: Db, spec: QueueSpec, worker: string, changes: Change[]): Promise<Record<string, number>> {
  if (changes.length === 0) return {}
  const decided = changes.filter((c): c is Decided => !isFailed(c))
  const failed = changes.filter(isFailed)
  const counts: Record<string, number> = {}
  const add = (k: string) => (counts[k] = (counts[k] ?? 0) + 1)
  await db.transaction(async (tx: Queryable) => {
    const done = await finish(tx, spec, worker, decided.map((c) => ({
      id: c.id, state: c.state, reason: c.reason ?? null, phone_e164: c.phoneE164 ?? null, uuid: c.uuid ?? null,
      expires_at: c.expiresAt?.toISOString() ?? null,
    })), {
      columns: 'state text, reason text, phone_e164 text, uuid uuid, expires_at timestamptz',
      set: `state = v.state, reason = v.reason, phone_e164 = coalesce(v.phone_e164, t.phone_e164), uuid = coalesce(v.uuid, t.uuid),
        expires_at = coalesce(v.expires_at, t.expires_at), updated_at = now()`,
    })
    const recorded = decided.filter((c) => done.has(c.id))
    await tx.copyInto('exposure_events', ['notice_id', 'kind', 'detail'], recorded.map((c) => [c.id, c.event.kind, c.event.detail ?? null]))
    for (const c of recorded) add(c.state === 'not_sent' ? `not_sent:${c.reason}` : c.state)
    // fail() writes its own events (retrying, postponed, failed) in the same statement.
    const results = await fail(tx, spec, worker, failed.map((c) => ({ id: c.id, ...c.failure })))
    const reasons = new Map(failed.map((c) => [c.id, (c.failure.detail as { reason?: string } | undefined)?.reason]))
    for (const r of results) add(r.failed ? `not_sent:${reasons.get(r.id) ?? 'out_of_attempts'}` : 'retrying')
    counts.taken_over = changes.length - done.size - results.length
    if (!counts.taken_over) delete counts.taken_over
  })
  return counts
}

/** Gives back notices claimed and not started (the engine was told to stop). */
export const releaseNotices = (db: Db, spec: QueueSpec, worker: string, notices: Notice[]) => release(db, spec, worker, notices.map((n) => n.id))

export function addCounts(into: Record<string, number>, from: Record<string, number>) {
  for (const [k, n] of Object.entries(from)) into[k] = (into[k] ?? 0) + n
  return into
}
