/**
 * An operator's answer to a case sync job that cannot be posted (`herald cases resolve`, the
 * console's resolve form): an unresolved transfer pointed at a case, or a case CommCare lost created again.
 */
import type { Db } from '../db/types.ts'
import { retry } from '../engine/queue.ts'
import { addEvent } from './jobs.ts'
import { outboundQueue } from './queue.ts'

/** Why an answer was refused; `notFound` when the case is not Herald's. Messages use the command's words. */
export class ResolveError extends Error {
  constructor(message: string, readonly notFound = false) {
    super(message)
    this.name = 'ResolveError'
  }
}

export type ResolveOptions = { to?: string; domain?: string; recreate?: boolean }

/** The command's arguments, checked before any database is opened. */
export function checkResolve(id: string, opts: ResolveOptions): string | undefined {
  if (!/^\d+$/.test(id)) throw new ResolveError(`CASE must be a case id, as herald cases --failed lists them: ${id}`)
  const to = opts.to?.trim()
  if (opts.to !== undefined && !to) throw new ResolveError('--to needs a CommCare case id')
  if (Boolean(to) === Boolean(opts.recreate)) throw new ResolveError('give either --to CASE_ID or --recreate')
  if (opts.recreate && opts.domain !== undefined) throw new ResolveError('--domain goes with --to, not --recreate')
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
export async function resolveCase(db: Db, id: string, opts: ResolveOptions, by = 'herald cases resolve'): Promise<string> {
  const to = checkResolve(id, opts)
  return db.transaction(async (tx) => {
    const [c] = await tx.query(
      `SELECT c.case_id, co.domain, q.failed_at IS NOT NULL AS failed, e.kind, e.detail
       FROM index_cases c JOIN counties co ON co.fips = c.county_fips
       LEFT JOIN case_sync_queue q ON q.index_case_id = c.id
       LEFT JOIN LATERAL (SELECT kind, detail FROM case_sync_events WHERE index_case_id = c.id ORDER BY id DESC LIMIT 1) e ON true
       WHERE c.id = $1 FOR UPDATE OF c`, [id])
    if (!c) throw new ResolveError(`no case ${id} (herald cases --failed lists the cases waiting for an answer)`, true)
    if (!c.failed || (c.kind !== 'unresolved_transfer' && c.kind !== 'missing_in_commcare')) {
      throw new ResolveError(`case ${id} is not waiting on an unresolved transfer or a case missing in CommCare`)
    }
    if (opts.recreate) {
      if (c.kind !== 'missing_in_commcare') throw new ResolveError(`case ${id} waits on an unresolved transfer, not a missing case: name its case with --to CASE_ID`)
      await tx.query(
        `UPDATE index_cases SET synced_at = NULL, commcare_modified_at = NULL, resolved_to_case_id = NULL, resolved_to_domain = NULL,
           updated_at = now() WHERE id = $1`, [id])
      await addEvent(tx, id, 'recreated', { domain: c.domain, case_id: c.case_id, missing: c.detail?.case_id ?? null })
      await retry(tx, outboundQueue, [id], `${by} --recreate`)
      return `case ${id} will be created again in ${c.domain} by the next case sync round`
    }
    if (to!.toLowerCase() === c.case_id) throw new ResolveError(`--to names case ${id}'s own CommCare case: name the case its changes should go to`)
    // The transfer's destination, or the domain the missing case was in, else the case's own.
    const domain = opts.domain?.trim() || c.detail?.to_domain || c.detail?.domain || c.domain
    const [county] = await tx.query('SELECT fips FROM counties WHERE domain = $1 LIMIT 1', [domain])
    if (!county) throw new ResolveError(`--domain ${domain} is no county's CommCare domain (herald counties lists them)`)
    await tx.query('UPDATE index_cases SET resolved_to_case_id = $2, resolved_to_domain = $3, updated_at = now() WHERE id = $1', [id, to, domain])
    await addEvent(tx, id, 'transfer_resolved', { to_case: to, domain, was: c.kind })
    await retry(tx, outboundQueue, [id], by)
    return `case ${id} will be posted to case ${to} in ${domain} by the next case sync round`
  })
}
