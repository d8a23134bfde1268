/** `herald exposure status` and `herald exposure retry --reason R`: where every notice stands, and a way to try again. */
import { table, withDb } from './context.ts'

export async function exposureStatusCommand(opts: { json?: boolean }) {
  return withDb(async ({ db }) => {
    const rows = await db.query(
      `SELECT state, coalesce(reason, '') AS reason, count(*)::int AS notices,
              count(*) FILTER (WHERE retry_at > now())::int AS waiting
       FROM exposure_notices GROUP BY 1, 2 ORDER BY 1, 2`)
    const [q] = await db.query(`SELECT count(*)::int AS marks FROM exposure_queue`)
    const dropped = await db.query(
      `SELECT detail->>'reason' AS reason, count(*)::int AS results FROM exposure_events WHERE kind = 'ineligible' GROUP BY 1 ORDER BY 1`)
    if (opts.json) return console.log(JSON.stringify({ notices: rows, marks_waiting: q.marks, ineligible: dropped }, null, 2))
    console.log(`${q.marks} new positive results waiting for intake`)
    console.log(rows.length ? table(rows.map((r) => ({ state: r.state, reason: r.reason, notices: r.notices, 'waiting to retry': r.waiting || '' }))) : 'no notices yet')
    if (dropped.length) console.log(`\nresults that did not count: ${dropped.map((d) => `${d.reason} ${d.results}`).join(', ')}`)
  })
}

/** Notices not sent for `reason` go back a step: to the phone check (lookup reasons) or to issue. */
export async function exposureRetryCommand(opts: { reason: string }) {
  return withDb(async ({ db }) => {
    const rows = await db.transaction(async (tx) => {
      const back = await tx.query(
        `UPDATE exposure_notices SET state = CASE WHEN phone_e164 IS NULL OR $1 IN ('invalid', 'landline', 'voip', 'line_type', 'lookup_refused', 'no_phone') THEN 'pending' ELSE 'phone_checked' END,
           reason = NULL, attempts = 0, retry_at = NULL, updated_at = now()
         WHERE state = 'not_sent' AND reason = $1 RETURNING id`, [opts.reason])
      await tx.query(`INSERT INTO exposure_events (notice_id, kind, detail) SELECT unnest($1::bigint[]), 'retry_requested', $2`,
        [back.map((r) => r.id), { reason: opts.reason }])
      return back
    })
    console.log(`${rows.length} notice${rows.length === 1 ? '' : 's'} not sent for "${opts.reason}" will be tried again`)
  })
}
