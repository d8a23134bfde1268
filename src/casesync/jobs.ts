/**
 * Outbound jobs: the rows of case_sync_queue (one per case, by its primary key). A worker claims a
 * few with a lease (no transaction is held across CommCare's answer) and records the posted ones
 * many to a transaction, a failure at once. The job is removed only when the generation it posted
 * is still the row's: a change made while the post was in flight leaves the job for another round.
 */
import type { Db, Queryable } from '../db/types.ts'

export interface Job {
  indexCaseId: string
  generation: number
  attempts: number
}

export const MAX_ATTEMPTS = 20

/**
 * Seconds to wait after the n-th failed attempt: 30 s doubling, at most 7 hours, ±10%. Twenty
 * attempts then span 30·(2¹⁰−1) + 9·25,200 s ≈ 2.98 days, CommCare's outages included.
 */
export function backoffSeconds(attempt: number, random = Math.random): number {
  const base = Math.min(30 * 2 ** (attempt - 1), 7 * 3600)
  return Math.round(base * (0.9 + 0.2 * random()))
}

export async function claimJobs(db: Db, worker: string, limit: number, leaseSeconds: number): Promise<Job[]> {
  const rows = await db.query(
    `UPDATE case_sync_queue SET claimed_by = $1, claimed_until = now() + make_interval(secs => $3)
     WHERE index_case_id IN (
       SELECT index_case_id FROM case_sync_queue
       WHERE failed_at IS NULL AND (retry_at IS NULL OR retry_at <= now()) AND (claimed_until IS NULL OR claimed_until < now())
       ORDER BY requested_at LIMIT $2 FOR UPDATE SKIP LOCKED)
     RETURNING index_case_id::text, generation, attempts`, [worker, limit, leaseSeconds])
  return rows.map((r) => ({ indexCaseId: r.index_case_id, generation: r.generation, attempts: r.attempts }))
}

export async function addEvent(q: Queryable, indexCaseId: string, kind: string, detail: object | null) {
  await q.query('INSERT INTO case_sync_events (index_case_id, kind, detail) VALUES ($1, $2, $3)', [indexCaseId, kind, detail])
}

/** A job whose post CommCare accepted, waiting to be recorded with others. */
export interface Posted {
  job: Job
  /** The case posted: the job's own, or the end of its transfer/duplicate chain. */
  targetId: string
  events: [indexCaseId: string, kind: string, detail: object][]
}

/**
 * Records posted jobs, many in one transaction: each target's synced_at, the events, and each job
 * removed, unless its case changed again meanwhile (then it waits for the next round). Until this
 * commits, a crash only means the same forms are posted again, which CommCare takes as updates.
 */
export async function finishJobs(db: Db, posted: Posted[]) {
  if (posted.length === 0) return
  const done = JSON.stringify(posted.map((p) => ({ origin: p.job.indexCaseId, generation: p.job.generation, target: p.targetId })))
  await db.transaction(async (tx) => {
    await tx.query(
      `WITH d AS (SELECT * FROM json_to_recordset($1::json) AS d(origin bigint, generation int, target bigint)),
         synced AS (UPDATE index_cases c SET synced_at = now() FROM d WHERE c.id = d.target),
         changed AS (UPDATE case_sync_queue q SET claimed_by = NULL, claimed_until = NULL, attempts = 0, retry_at = NULL, last_error = NULL
           FROM d WHERE q.index_case_id = d.origin AND q.generation <> d.generation)
       DELETE FROM case_sync_queue q USING d WHERE q.index_case_id = d.origin AND q.generation = d.generation`, [done])
    await tx.copyInto('case_sync_events', ['index_case_id', 'kind', 'detail'], posted.flatMap((p) => p.events))
  })
}

/** CommCare asked us to wait: the job waits as told, and no attempt is spent. */
export async function postponeJob(db: Db, job: Job, seconds: number, error: string) {
  await db.transaction(async (tx) => {
    await tx.query(`UPDATE case_sync_queue SET claimed_by = NULL, claimed_until = NULL, last_error = $2,
        retry_at = now() + make_interval(secs => $3) WHERE index_case_id = $1`, [job.indexCaseId, error, seconds])
    await addEvent(tx, job.indexCaseId, 'rate_limited', { retry_after_seconds: seconds })
  })
}

/** An attempt failed: try again after the backoff, or, out of attempts (or refused for good), fail. */
export async function failAttempt(db: Db, job: Job, error: string, permanent: boolean): Promise<'retrying' | 'failed'> {
  const attempts = job.attempts + 1
  const fail = permanent || attempts >= MAX_ATTEMPTS
  const wait = backoffSeconds(attempts)
  await db.transaction(async (tx) => {
    await tx.query(`UPDATE case_sync_queue SET claimed_by = NULL, claimed_until = NULL, attempts = $2, last_error = $3,
        retry_at = CASE WHEN $4 THEN NULL ELSE now() + make_interval(secs => $5) END,
        failed_at = CASE WHEN $4 THEN now() END
      WHERE index_case_id = $1`, [job.indexCaseId, attempts, error, fail, wait])
    await addEvent(tx, job.indexCaseId, fail ? 'failed' : 'retrying',
      fail ? { attempts, error, reason: permanent ? 'refused' : 'out of attempts' } : { attempts, error, retry_in_seconds: wait })
  })
  return fail ? 'failed' : 'retrying'
}

/** A transfer or duplicate cycle: no post can be right until someone fixes it in CommCare. */
export async function failCycle(db: Db, job: Job, chain: string[]) {
  await db.transaction(async (tx) => {
    await tx.query(`UPDATE case_sync_queue SET claimed_by = NULL, claimed_until = NULL, failed_at = now(),
        last_error = 'transfer or duplicate cycle in CommCare' WHERE index_case_id = $1`, [job.indexCaseId])
    await addEvent(tx, job.indexCaseId, 'cycle', { chain })
  })
}

/** `herald cases retry`: failed jobs (all, or these cases) are due again, with their attempts anew. */
export async function retryFailed(db: Db, caseIds?: string[]): Promise<number> {
  return db.transaction(async (tx) => {
    const rows = await tx.query(
      `UPDATE case_sync_queue SET failed_at = NULL, attempts = 0, retry_at = NULL
       WHERE failed_at IS NOT NULL AND ($1::bigint[] IS NULL OR index_case_id = ANY($1)) RETURNING index_case_id::text`, [caseIds ?? null])
    for (const r of rows) await addEvent(tx, r.index_case_id, 'retry_requested', null)
    return rows.length
  })
}

/** Gives back claimed jobs not started (on stop). */
export async function releaseJobs(db: Db, jobs: Job[]) {
  if (jobs.length === 0) return
  await db.query('UPDATE case_sync_queue SET claimed_by = NULL, claimed_until = NULL WHERE index_case_id = ANY($1::bigint[])',
    [jobs.map((j) => j.indexCaseId)])
}
