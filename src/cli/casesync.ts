/**
 * `herald cases`: case sync's queue (why jobs retry, which wait for an operator), its failures, a
 * retry, an operator's answer to a case that cannot be posted (`resolve`), and each domain's cursor.
 */
import { skippedByReason } from '../casesync/inbound.ts'
import { addEvent } from '../casesync/jobs.ts'
import { outboundQueue } from '../casesync/queue.ts'
import type { Db } from '../db/types.ts'
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

/** What the failed jobs wait for, by the kind of their last event (failStuck writes it after 'failed'). */
const WAITING = ['unresolved_transfer', 'missing_in_commcare', 'cycle']

/**
 * The outbound queue's counts (as `herald queue`: waiting is due now, retrying waits a backoff or a
 * 429), why jobs are retrying (their last errors by kind: the status, not CommCare's message, no
 * case ids) and what the failed ones wait for.
 */
export async function outboundSummary(db: Db) {
  const queue = await stats(db, outboundQueue)
  const retrying = await db.query<{ error: string; n: number }>(
    `SELECT error, count(*)::int AS n FROM (
       SELECT regexp_replace(regexp_replace(regexp_replace(coalesce(last_error, '(no error kept)'),
                '/[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}', '', 'gi'), -- case ids out of paths
              '/:', ':', 'g'),
              '(HTTP [0-9]{3}).*$', '\\1') AS error -- the status, not CommCare's message (it may quote a value)
       FROM case_sync_queue
       WHERE failed_at IS NULL AND retry_at > now() AND (claimed_until IS NULL OR claimed_until <= now())) r
     GROUP BY error ORDER BY n DESC, error LIMIT 10`)
  const failedBy = await db.query<{ kind: string; n: number }>(
    `SELECT e.kind, count(*)::int AS n FROM case_sync_queue q
     LEFT JOIN LATERAL (SELECT kind FROM case_sync_events WHERE index_case_id = q.index_case_id ORDER BY id DESC LIMIT 1) e ON true
     WHERE q.failed_at IS NOT NULL GROUP BY e.kind`)
  const failed: Record<string, number> = {}
  for (const r of failedBy) {
    const kind = WAITING.includes(r.kind) ? r.kind : 'other'
    failed[kind] = (failed[kind] ?? 0) + r.n
  }
  const n = (k: string, one: string, many: string) => (failed[k] ? [`${failed[k]} ${failed[k] === 1 ? one : many}`] : [])
  const answerable = [...n('unresolved_transfer', 'unresolved transfer', 'unresolved transfers'), ...n('missing_in_commcare', 'missing in CommCare', 'missing in CommCare')]
  const waiting = [...(answerable.length ? [`${answerable.join(', ')}: herald cases resolve`] : []), ...n('cycle', 'cycle', 'cycles').map((c) => `${c} to fix in CommCare`)]
  const lines = [`outbound: ${queue.waiting} waiting, ${queue.retrying} retrying, ${queue.inFlight} in flight, ${queue.failed} failed` +
    (waiting.length ? ` (${waiting.join('; ')})` : '') + (queue.failed ? '; herald cases --failed lists them' : '')]
  if (retrying.length) lines.push(`  ${queue.retrying} retrying: ${retrying.map((r) => `${r.n} × ${r.error}`).join('; ')}`)
  return { queue, retrying, failed, lines }
}

type ResolveOptions = { to?: string; domain?: string; recreate?: boolean }

/** The command's arguments, checked before any database is opened. */
function checkResolve(id: string, opts: ResolveOptions): string | undefined {
  if (!/^\d+$/.test(id)) throw new Error(`CASE must be a case id, as herald cases --failed lists them: ${id}`)
  const to = opts.to?.trim()
  if (opts.to !== undefined && !to) throw new Error('--to needs a CommCare case id')
  if (Boolean(to) === Boolean(opts.recreate)) throw new Error('give either --to CASE_ID or --recreate')
  if (opts.recreate && opts.domain !== undefined) throw new Error('--domain goes with --to, not --recreate')
  return to
}

/**
 * `herald cases resolve CASE --to CASE_ID [--domain DOMAIN]` or `--recreate`: an operator's answer to
 * a job that waits on an unresolved transfer or a case CommCare no longer has. --to: the case's
 * changes go to that CommCare case (and on along its chain), in DOMAIN (default: the transfer's
 * destination domain, or the domain the missing case was in, else the case's own). --recreate (a
 * missing case only): Herald forgets that CommCare had the case, so the next post creates it again.
 * Either way the job is due again, with its attempts anew.
 */
export async function resolveCase(db: Db, id: string, opts: ResolveOptions): Promise<string> {
  const to = checkResolve(id, opts)
  return db.transaction(async (tx) => {
    const [c] = await tx.query(
      `SELECT c.case_id, co.domain, q.failed_at IS NOT NULL AS failed, e.kind, e.detail
       FROM index_cases c JOIN counties co ON co.fips = c.county_fips
       LEFT JOIN case_sync_queue q ON q.index_case_id = c.id
       LEFT JOIN LATERAL (SELECT kind, detail FROM case_sync_events WHERE index_case_id = c.id ORDER BY id DESC LIMIT 1) e ON true
       WHERE c.id = $1 FOR UPDATE OF c`, [id])
    if (!c) throw new Error(`no case ${id} (herald cases --failed lists the cases waiting for an answer)`)
    if (!c.failed || (c.kind !== 'unresolved_transfer' && c.kind !== 'missing_in_commcare')) {
      throw new Error(`case ${id} is not waiting on an unresolved transfer or a case missing in CommCare`)
    }
    if (opts.recreate) {
      if (c.kind !== 'missing_in_commcare') throw new Error(`case ${id} waits on an unresolved transfer, not a missing case: name its case with --to CASE_ID`)
      await tx.query(
        `UPDATE index_cases SET synced_at = NULL, commcare_modified_at = NULL, resolved_to_case_id = NULL, resolved_to_domain = NULL,
           updated_at = now() WHERE id = $1`, [id])
      await addEvent(tx, id, 'recreated', { domain: c.domain, case_id: c.case_id, missing: c.detail?.case_id ?? null })
      await retry(tx, outboundQueue, [id], 'herald cases resolve --recreate')
      return `case ${id} will be created again in ${c.domain} by the next case sync round`
    }
    if (to!.toLowerCase() === c.case_id) throw new Error(`--to names case ${id}'s own CommCare case: name the case its changes should go to`)
    // The transfer's destination, or the domain the missing case was in, else the case's own.
    const domain = opts.domain?.trim() || c.detail?.to_domain || c.detail?.domain || c.domain
    const [county] = await tx.query('SELECT fips FROM counties WHERE domain = $1 LIMIT 1', [domain])
    if (!county) throw new Error(`--domain ${domain} is no county's CommCare domain (herald counties lists them)`)
    await tx.query('UPDATE index_cases SET resolved_to_case_id = $2, resolved_to_domain = $3, updated_at = now() WHERE id = $1', [id, to, domain])
    await addEvent(tx, id, 'transfer_resolved', { to_case: to, domain, was: c.kind })
    await retry(tx, outboundQueue, [id], 'herald cases resolve')
    return `case ${id} will be posted to case ${to} in ${domain} by the next case sync round`
  })
}

export async function casesResolveCommand(id: string, opts: ResolveOptions) {
  checkResolve(id, opts)
  return withDb(async ({ db }) => console.log(await resolveCase(db, id, opts)))
}
