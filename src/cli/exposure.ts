/** `herald exposure status` and `herald exposure retry --reason R`: where every notice stands, and a way to try again. */
import { exposureStatus, retryNotices } from '../exposure/status.ts'
import { table, withDb } from './context.ts'

// Where the tests first found it.
export { retryNotices }

export async function exposureStatusCommand(opts: { json?: boolean }) {
  return withDb(async ({ db }) => {
    const { notices: rows, marksWaiting, marksFailed, ineligible: dropped } = await exposureStatus(db)
    const q = { marks: marksWaiting, failed: marksFailed }
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
