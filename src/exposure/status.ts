/**
 * Where exposure notices stand (`herald exposure status`, the console's exposure page), and notices
 * not sent for a reason put back a step (`herald exposure retry --reason`, the console's retry).
 */
import type { Db, Queryable } from '../db/types.ts'
import { retry } from '../engine/queue.ts'
import { checkQueue, issueQueue } from './queue.ts'

/** Notices by state and reason (with how many wait to retry), intake's marks, and results that did not count. */
export async function exposureStatus(db: Queryable) {
  // A notice on its way shows what its last try met (last_error); one not sent, why (reason).
  const notices = await db.query<{ state: string; reason: string; notices: number; waiting: number }>(
    `SELECT state, coalesce(reason, CASE WHEN state IN ('pending', 'phone_checked') THEN last_error END, '') AS reason, count(*)::int AS notices,
            count(*) FILTER (WHERE retry_at > now())::int AS waiting
     FROM exposure_notices GROUP BY 1, 2 ORDER BY 1, 2`)
  const [q] = await db.query(`SELECT count(*) FILTER (WHERE failed_at IS NULL)::int AS marks, count(*) FILTER (WHERE failed_at IS NOT NULL)::int AS failed FROM exposure_queue`)
  const ineligible = await db.query<{ reason: string; results: number }>(
    `SELECT detail->>'reason' AS reason, count(*)::int AS results FROM exposure_events WHERE kind = 'ineligible' GROUP BY 1 ORDER BY 1`)
  return { notices, marksWaiting: q.marks as number, marksFailed: q.failed as number, ineligible }
}

/** Puts the notices not sent for `reason` back; returns how many. */
export async function retryNotices(db: Db, reason: string, by = `herald exposure retry --reason ${reason}`): Promise<number> {
  return db.transaction(async (tx) => {
    const failed = await tx.query(`SELECT id::text FROM exposure_notices WHERE state = 'not_sent' AND reason = $1 AND failed_at IS NOT NULL`, [reason])
    // Each step retries its own failures (failedScope); onRetry sends a notice back to the step that failed.
    const ids = failed.map((r) => r.id)
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
