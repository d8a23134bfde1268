/**
 * `herald cases`: case sync's queue (why jobs retry, which wait for an operator), its failures, a
 * retry, an operator's answer to a case that cannot be posted (`resolve`), and each domain's cursor.
 */
import { skippedByReason } from '../casesync/inbound.ts'
import { outboundQueue } from '../casesync/queue.ts'
import { checkResolve, resolveCase, type ResolveOptions } from '../casesync/resolve-case.ts'
import { failedCases, outboundSummary } from '../casesync/status.ts'
import { retry } from '../engine/queue.ts'
import { table, withDb } from './context.ts'

// The case sync functions the tests and the console call, where they were first written.
export { outboundSummary, resolveCase }

const when = (t: unknown) => (t ? new Date(t as string).toISOString().slice(0, 19).replace('T', ' ') : '')

export async function casesCommand(opts: { failed?: boolean; json?: boolean }) {
  return withDb(async ({ db }) => {
    if (opts.failed) {
      const rows = (await failedCases(db)).map((r) => ({
        index_case_id: r.index_case_id, case_id: r.case_id, domain: r.domain, attempts: r.attempts, failed_at: r.failed_at, last_error: r.last_error,
      }))
      if (opts.json) return console.log(JSON.stringify(rows, null, 2))
      console.log(table(rows.map((r) => ({
        case: r.index_case_id, 'commcare case_id': r.case_id, domain: r.domain, attempts: r.attempts, failed: when(r.failed_at), error: r.last_error,
      }))))
      if (rows.length) console.log('\nherald cases retry [CASE...] tries them again (all of them without a case id)')
      return
    }
    const [c] = await db.query('SELECT count(*) AS cases, count(synced_at) AS synced FROM index_cases')
    const cursors = await db.query('SELECT domain, modified_upto, polled_at, retry_at, last_error FROM commcare_cursors ORDER BY domain')
    const out = await outboundSummary(db)
    const skipped = await skippedByReason(db)
    if (opts.json) return console.log(JSON.stringify({ queue: out.queue, retrying: out.retrying, failed: out.failed, cases: c, cursors, skipped }, null, 2))
    for (const line of out.lines) console.log(line)
    console.log(`${c.synced} of ${c.cases} cases posted at least once`)
    const pulled = cursors.filter((r) => r.modified_upto)
    const shown = cursors.filter((r) => r.modified_upto || r.last_error)
    console.log(`inbound: ${cursors.length} domains polled, ${pulled.length} with changes pulled` + (shown.length ? ':' : ''))
    if (shown.length) {
      console.log(table(shown.map((r) => ({
        domain: r.domain, 'changes pulled up to': when(r.modified_upto), 'last poll': when(r.polled_at), 'next poll': when(r.retry_at), error: r.last_error ?? '',
      }))))
    }
    if (skipped.length) {
      // The import rules (docs/architecture.md): cases that are not (yet) a person's case are not pulled in.
      const total = skipped.reduce((n, r) => n + r.count, 0)
      console.log(`pulled cases not imported: ${total}, by the import rules (a later version that passes is imported)`)
      console.log(table(skipped.map((r) => ({ domain: r.domain, reason: r.reason, cases: r.count }))))
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

export async function casesResolveCommand(id: string, opts: ResolveOptions) {
  checkResolve(id, opts)
  return withDb(async ({ db }) => console.log(await resolveCase(db, id, opts)))
}
