/** `herald cases`: case sync's queue, its failures, a retry, and each domain's inbound cursor. */
import { outboundQueue } from '../casesync/queue.ts'
import { retry, stats } from '../engine/queue.ts'
import { table, withDb } from './context.ts'

const when = (t: unknown) => (t ? new Date(t as string).toISOString().slice(0, 19).replace('T', ' ') : '')

export async function casesCommand(opts: { failed?: boolean; json?: boolean }) {
  return withDb(async ({ db }) => {
    if (opts.failed) {
      const rows = await db.query(
        `SELECT q.index_case_id, c.case_id, co.domain, q.attempts, q.failed_at, q.last_error
         FROM case_sync_queue q JOIN index_cases c ON c.id = q.index_case_id JOIN counties co ON co.fips = c.county_fips
         WHERE q.failed_at IS NOT NULL ORDER BY q.failed_at LIMIT 1000`)
      if (opts.json) return console.log(JSON.stringify(rows, null, 2))
      console.log(table(rows.map((r) => ({
        case: r.index_case_id, 'commcare case_id': r.case_id, domain: r.domain, attempts: r.attempts, failed: when(r.failed_at), error: r.last_error,
      }))))
      if (rows.length) console.log('\nherald cases retry [CASE...] tries them again (all of them without a case id)')
      return
    }
    // The queue's own counts (as `herald queue`): waiting is due now; retrying waits a backoff or a 429.
    const q = await stats(db, outboundQueue)
    const [c] = await db.query('SELECT count(*) AS cases, count(synced_at) AS synced FROM index_cases')
    const cursors = await db.query('SELECT domain, modified_upto, polled_at, retry_at, last_error FROM commcare_cursors ORDER BY domain')
    const state = { queue: q, cases: c, cursors }
    if (opts.json) return console.log(JSON.stringify(state, null, 2))
    console.log(`outbound: ${q.waiting} waiting, ${q.retrying} retrying, ${q.inFlight} in flight, ${q.failed} failed` +
      ` (herald cases --failed); ${c.synced} of ${c.cases} cases posted at least once`)
    const pulled = cursors.filter((r) => r.modified_upto)
    const shown = cursors.filter((r) => r.modified_upto || r.last_error)
    console.log(`inbound: ${cursors.length} domains polled, ${pulled.length} with changes pulled` + (shown.length ? ':' : ''))
    if (shown.length) {
      console.log(table(shown.map((r) => ({
        domain: r.domain, 'changes pulled up to': when(r.modified_upto), 'last poll': when(r.polled_at), 'next poll': when(r.retry_at), error: r.last_error ?? '',
      }))))
    }
  })
}

export async function casesRetryCommand(ids: string[]) {
  const bad = ids.filter((id) => !/^\d+$/.test(id))
  if (bad.length) throw new Error(`not a case id (herald cases --failed lists them): ${bad.join(', ')}`)
  return withDb(async ({ db }) => {
    const n = (await retry(db, outboundQueue, ids.length ? ids : undefined)).length
    console.log(`${n} failed case${n === 1 ? '' : 's'} will be posted again by the next case sync round`)
  })
}
