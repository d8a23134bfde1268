/**
 * Outbound jobs: the rows of case_sync_queue (one per case, by its primary key), claimed, retried and
 * failed through the work queue (src/engine/queue.ts) with the spec in queue.ts. A worker claims a
 * few with a lease (no transaction is held across CommCare's answer) and records the posted ones
 * many to a transaction, a failure at once. The job is removed only when the generation it posted
 * is still the row's: a change made while the post was in flight leaves the job for another round.
 */
import type { Db, Queryable } from '../db/types.ts'
import { claim, fail, finish, release } from '../engine/queue.ts'
import { outboundQueue } from './queue.ts'

export interface Job {
  indexCaseId: string
  generation: number
  attempts: number
}

export async function claimJobs(db: Db, worker: string, limit: number): Promise<Job[]> {
  const rows = await claim<{ generation: number }>(db, outboundQueue, worker, limit, { returning: 't.generation' })
  return rows.map((r) => ({ indexCaseId: r.id, generation: r.generation, attempts: r.attempts }))
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
 * this worker still holds removed, unless its case changed again meanwhile (then it stays, unclaimed,
 * with its attempts anew, for the next round). Until this commits, a crash only means the same forms
 * are posted again, which CommCare takes as updates. synced_at and the events are recorded even for
 * a job another worker took over meanwhile: the post did happen.
 */
export async function finishJobs(db: Db, worker: string, posted: Posted[]) {
  if (posted.length === 0) return
  const jobs = posted.map((p) => ({ id: p.job.indexCaseId, generation: p.job.generation }))
  await db.transaction(async (tx) => {
    await tx.query(`UPDATE index_cases c SET synced_at = now() FROM json_to_recordset($1::json) AS d(target bigint) WHERE c.id = d.target`,
      [JSON.stringify(posted.map((p) => ({ target: p.targetId })))])
    await finish(tx, outboundQueue, worker, jobs, { columns: 'generation int', delete: true, where: 't.generation = v.generation' })
    await finish(tx, outboundQueue, worker, jobs, { columns: 'generation int', where: 't.generation <> v.generation' })
    await tx.copyInto('case_sync_events', ['index_case_id', 'kind', 'detail'], posted.flatMap((p) => p.events))
  })
}

/** CommCare asked us to wait: the job waits as told and spends no attempt (a `postponed` event). */
export async function postponeJob(db: Db, worker: string, job: Job, seconds: number, error: string) {
  await fail(db, outboundQueue, worker, [{ id: job.indexCaseId, error, postponeSeconds: seconds, detail: { retry_after_seconds: seconds } }])
}

/**
 * An attempt failed: the job waits its backoff, or, out of attempts (or refused for good), fails.
 * 'taken_over' when another worker holds the job now (it records its own outcome).
 */
export async function failAttempt(db: Db, worker: string, job: Job, error: string, permanent: boolean): Promise<'retrying' | 'failed' | 'taken_over'> {
  // The reason is for the reader of the event; whether the job fails is decided in SQL by fail().
  const reason = permanent ? 'refused' : job.attempts + 1 >= outboundQueue.retry.maxAttempts ? 'out of attempts' : undefined
  const [r] = await fail(db, outboundQueue, worker, [{ id: job.indexCaseId, error, permanent, detail: reason ? { reason } : undefined }])
  return !r ? 'taken_over' : r.failed ? 'failed' : 'retrying'
}

/**
 * A job no post can be right for until someone acts, failed at once with an event saying why:
 * 'cycle' (a transfer or duplicate cycle: fix it in CommCare), 'unresolved_transfer' and
 * 'missing_in_commcare' (`herald cases resolve`). Listed by `herald cases --failed` and
 * `herald queue failed casesync-out`.
 */
export async function failStuck<K extends 'cycle' | 'unresolved_transfer' | 'missing_in_commcare'>(
  db: Db, worker: string, job: Job, kind: K, error: string, detail: object,
): Promise<K | 'taken_over'> {
  return db.transaction(async (tx) => {
    const [r] = await fail(tx, outboundQueue, worker, [{ id: job.indexCaseId, error, permanent: true, detail: { reason: kind } }])
    if (!r) return 'taken_over'
    await addEvent(tx, job.indexCaseId, kind, detail)
    return kind
  })
}

/** Gives back claimed jobs not started (on stop). */
export async function releaseJobs(db: Db, worker: string, jobs: Job[]) {
  await release(db, outboundQueue, worker, jobs.map((j) => j.indexCaseId))
}
