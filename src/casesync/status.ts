/**
 * Case sync as people see it (`herald cases`, the console's case sync page): the outbound queue's
 * counts and why jobs retry, the failed jobs with what each waits for, and the counts by county.
 */
import type { Queryable } from '../db/types.ts'
import { stats } from '../engine/queue.ts'
import { outboundQueue } from './queue.ts'

/** What the failed jobs wait for, by the kind of their last event (failStuck writes it after 'failed'). */
const WAITING = ['unresolved_transfer', 'missing_in_commcare', 'cycle']

/**
 * The outbound queue's counts (as `herald queue`: waiting is due now, retrying waits a backoff or a
 * 429), why jobs are retrying (their last errors by kind: the status, not CommCare's message, no
 * case ids) and what the failed ones wait for.
 */
export async function outboundSummary(db: Queryable) {
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

export interface FailedCase {
  index_case_id: string
  case_id: string
  county_fips: number
  county: string
  domain: string
  attempts: number
  failed_at: Date
  last_error: string | null
  /** The job's last event: unresolved_transfer, missing_in_commcare and cycle say what it waits for. */
  kind: string | null
  detail: Record<string, any> | null
}

/** The failed jobs, oldest first, each with its last event (`herald cases --failed`). */
export async function failedCases(db: Queryable, limit = 1000): Promise<FailedCase[]> {
  const rows = await db.query(
    `SELECT q.index_case_id::text AS index_case_id, c.case_id, c.county_fips, co.display AS county, co.domain, q.attempts, q.failed_at, q.last_error,
            e.kind, e.detail
     FROM case_sync_queue q JOIN index_cases c ON c.id = q.index_case_id JOIN counties co ON co.fips = c.county_fips
     LEFT JOIN LATERAL (SELECT kind, detail FROM case_sync_events WHERE index_case_id = q.index_case_id ORDER BY id DESC LIMIT 1) e ON true
     WHERE q.failed_at IS NOT NULL ORDER BY q.failed_at, q.index_case_id LIMIT $1`, [limit])
  return rows.map((r) => ({ ...r, failed_at: new Date(r.failed_at) }) as FailedCase)
}

/** Jobs by the county of their case: waiting (due or backing off), in flight, failed. */
export async function casesByCounty(db: Queryable): Promise<{ fips: number; county: string; domain: string | null; waiting: number; inFlight: number; failed: number }[]> {
  const rows = await db.query(
    `SELECT co.fips, co.display AS county, co.domain,
            count(*) FILTER (WHERE q.failed_at IS NULL AND NOT coalesce(q.claimed_until > now(), false))::int AS waiting,
            count(*) FILTER (WHERE q.failed_at IS NULL AND q.claimed_until > now())::int AS in_flight,
            count(*) FILTER (WHERE q.failed_at IS NOT NULL)::int AS failed
     FROM case_sync_queue q JOIN index_cases c ON c.id = q.index_case_id JOIN counties co ON co.fips = c.county_fips
     GROUP BY co.fips, co.display, co.domain ORDER BY co.fips`)
  return rows.map((r) => ({ fips: r.fips, county: r.county, domain: r.domain, waiting: r.waiting, inFlight: r.in_flight, failed: r.failed }))
}
