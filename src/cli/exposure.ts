/** `herald exposure status` and `herald exposure retry --reason R`: where every notice stands, and a way to try again. */
import type { Db } from '../db/types.ts'
import { retry } from '../engine/queue.ts'
import { checkQueue, issueQueue } from '../exposure/queue.ts'
import { table, withDb } from './context.ts'

export async function exposureStatusCommand(opts: { json?: boolean }) {
  return withDb(async ({ db }) => {
    // A notice on its way shows what its last try met (last_error); one not sent, why (reason).
    const rows = await db.query(
      `SELECT state, coalesce(reason, CASE WHEN state IN ('pending', 'phone_checked') THEN last_error END, '') AS reason, count(*)::int AS notices,
              count(*) FILTER (WHERE retry_at > now())::int AS waiting
       FROM exposure_notices GROUP BY 1, 2 ORDER BY 1, 2`)
    const [q] = await db.query(`SELECT count(*) FILTER (WHERE failed_at IS NULL)::int AS marks, count(*) FILTER (WHERE failed_at IS NOT NULL)::int AS failed FROM exposure_queue`)
    const dropped = await db.query(
      `SELECT detail->>'reason' AS reason, count(*)::int AS results FROM exposure_events WHERE kind = 'ineligible' GROUP BY 1 ORDER BY 1`)
    if (opts.json) return console.log(JSON.stringify({ notices: rows, marks_waiting: q.marks, marks_failed: q.failed, ineligible: dropped }, null, 2))
    console.log(`${q.marks} new positive results waiting for intake`)
    if (q.failed) console.log(`${q.failed} that intake failed on (herald queue failed exposure-intake)`)
    console.log(rows.length ? table(rows.map((r) => ({ state: r.state, reason: r.reason, notices: r.notices, 'waiting to retry': r.waiting || '' }))) : 'no notices yet')
    if (dropped.length) console.log(`\nresults that did not count: ${dropped.map((d) => `${d.reason} ${d.results}`).join(', ')}`)
  })
}

/**
 * Notices not sent for `reason` go back a step: to the phone check (lookup reasons) or to issue.
 * Those that failed for good (out_of_attempts, lookup_refused, refused: failed_at set) go back
 * through the work queue's retry, which clears failed_at and the attempts (the spec's onRetry picks
 * the step); the others (a decision, e.g. landline) are put back here. Each gets a retry_requested event.
 */
export async function exposureRetryCommand(opts: { reason: string }) {
  return withDb(async ({ db }) => {
    const n = await retryNotices(db, opts.reason)
    console.log(`${n} notice${n === 1 ? '' : 's'} not sent for "${opts.reason}" will be tried again`)
  })
}

/** Puts the notices not sent for `reason` back; returns how many. */
export async function retryNotices(db: Db, reason: string): Promise<number> {
  return db.transaction(async (tx) => {
    const failed = await tx.query(`SELECT id::text FROM exposure_notices WHERE state = 'not_sent' AND reason = $1 AND failed_at IS NOT NULL`, [reason])
    // Each step retries its own failures (failedScope); onRetry sends a notice back to the step that failed.
    const ids = failed.map((r) => r.id)
    const by = `herald exposure retry --reason ${reason}`
    const retried = ids.length ? [...await retry(tx, checkQueue, ids, by), ...await retry(tx, issueQueue, ids, by)] : []
    const back = await tx.query(
      `UPDATE exposure_notices SET state = CASE WHEN phone_e164 IS NULL OR $1 IN ('invalid', 'landline', 'voip', 'line_type', 'lookup_refused', 'no_phone') THEN 'pending' ELSE 'phone_checked' END,
         phone_e164 = CASE WHEN $1 IN ('invalid', 'landline', 'voip', 'line_type', 'lookup_refused', 'no_phone') THEN NULL ELSE phone_e164 END,
         reason = NULL, attempts = 0, retry_at = NULL, last_error = NULL, updated_at = now()
       WHERE state = 'not_sent' AND reason = $1 AND failed_at IS NULL RETURNING id`, [reason])
    await tx.query(`INSERT INTO exposure_events (notice_id, kind, detail) SELECT unnest($1::bigint[]), 'retry_requested', $2`,
      [back.map((r) => r.id), { reason: reason }])
    return retried.length + back.length
  })
}
