/**
 * Bulk jobs: an uploaded CSV is checked row by row (every problem named with its row), stored in the
 * object store, and recorded (upload.ts: at once through the API, or checked first in the console and
 * started after); the jobs engine then claims it (src/engine/queue.ts, jobsQueue) and
 * creates its notifications in batches, each with the job's progress and its claim's heartbeat in one
 * transaction: a restart, or the worker that takes over a lease that ran out, resumes after the last
 * batch. A job may be scheduled (due at its time), and cancelled until it has finished (its texts
 * not yet sent are cancelled too).
 */
import { randomUUID } from 'node:crypto'
import type { Readable } from 'node:stream'
import type { Db, Queryable } from '../../db/types.ts'
import type { Engine } from '../../engine/engine.ts'
import { claim, fail, finish, heartbeat, release } from '../../engine/queue.ts'
import { errorText, type Logger } from '../../log.ts'
import type { Sealer } from '../../privacy/seal.ts'
import type { ObjectStore } from '../../storage/types.ts'
import { giveBackDay, limitError, NOTIFICATION_COLUMNS, notificationRow, reserveDay, type NewNotification } from '../api/admit.ts'
import { checkPhone } from '../phone.ts'
import type { Service } from '../services.ts'
import { placeholders } from '../templates.ts'
import { jobRows } from './csv.ts'
import { jobsQueue } from './queue.ts'
import { SEALED } from './upload.ts'

const BATCH = 2000

export { createJob, startJob, uploadJob, JobStateError, type JobCheck, type JobInput, type JobProblem } from './upload.ts'

/** Cancels a job not yet finished (or an upload not started), and its texts not yet handed to a provider. */
export async function cancelJob(db: Db, serviceId: string, id: string): Promise<boolean> {
  return db.transaction(async (tx) => {
    const [job] = await tx.query(`UPDATE jobs SET status = 'cancelled', finished_at = now() WHERE id = $1 AND service_id = $2
      AND status IN ('uploaded', 'scheduled', 'pending', 'in progress') RETURNING rows, rows_done, counted_on::text AS counted_on`, [id, serviceId])
    if (!job) return false
    // Its rows were counted when it started; those it will not make are given back (no batch commits after this: stillOurs).
    if (job.counted_on) await giveBackDay(tx, serviceId, job.counted_on, job.rows - job.rows_done)
    await tx.query(`UPDATE notifications SET status = 'cancelled', completed_at = now(), updated_at = now() WHERE job_id = $1 AND status = 'created'`, [id])
    return true
  })
}

/**
 * A notifications table never analyzed (a new install's first job) has no statistics, and without
 * them PostgreSQL plans the send engine's claim as a read and sort of every created text (a bitmap
 * scan, which also walks every dead entry) instead of the first few in index order: each claim then
 * costs the whole job. Analyzed once here, after the job's first batch, the plan is the index scan
 * from then on, as on any table that has statistics.
 */
async function statistics(db: Db) {
  const [t] = await db.query(`SELECT reltuples <= 0 AS none FROM pg_class WHERE oid = 'notifications'::regclass`)
  if (t?.none) await db.exec('ANALYZE notifications')
}

export interface JobsEngineOptions {
  sealer: Sealer
  region: string
  store: ObjectStore
  /** This process's worker id (HERALD_WORKER_ID); default one of its own per engine. */
  workerId?: string
  /** Notifications per transaction (tests). */
  batch?: number
}

const LIVE = ['scheduled', 'pending', 'in progress']

/**
 * An error as the job records and logs it: a database error by its SQLSTATE (errorText), never the
 * values it may quote; a CSV parser's by its code, as its message quotes the field (a number).
 */
function jobError(err: unknown): string {
  const code = (err as { code?: unknown })?.code
  return typeof code === 'string' && code.startsWith('CSV_') ? `the file could not be read as CSV (${code})` : errorText(err)
}

export function jobsEngine(opts: JobsEngineOptions, log: Logger): Engine {
  const worker = opts.workerId ?? `jobs:${randomUUID()}`
  const size = opts.batch ?? BATCH
  return {
    name: 'jobs',
    batchSize: size,
    async step(db, signal): Promise<Record<string, number>> {
      if (signal.aborted) return {}
      const [job] = await claim(db, jobsQueue, worker, 1, {
        returning: `t.service_id, t.template_id, t.template_version, t.api_key_id, t.key_type, t.file_uri, t.rows_read, t.rows, t.counted_on::text AS counted_on,
          (SELECT body FROM template_versions v WHERE v.template_id = t.template_id AND v.version = t.template_version) AS body,
          (SELECT row_to_json(s) FROM services s WHERE s.id = t.service_id) AS service`,
      })
      if (!job) return {}
      try {
        const r = await run(db, job, signal)
        if (r.outcome === 'limited') {
          log.info({ job: job.id, rows: job.rows }, 'bulk job not started: sending limits exceeded')
          return { limited: 1 }
        }
        if (r.outcome === 'finished') log.info({ job: job.id, created: r.created }, 'bulk job done')
        else log.info({ job: job.id, created: r.created, outcome: r.outcome }, 'bulk job stopped at a batch boundary')
        // Stopped, cancelled or taken over: the claim goes (a no-op unless it is still ours), the checkpoint stays.
        if (r.outcome !== 'finished') await release(db, jobsQueue, worker, [job.id])
        return { rows: r.created, ...(r.outcome === 'finished' ? {} : { [r.outcome]: 1 }) }
      } catch (err) {
        const [f] = await fail(db, jobsQueue, worker, [{ id: job.id, error: jobError(err) }])
        log.error({ job: job.id, err: jobError(err), attempts: f?.attempts, failed: f?.failed }, 'bulk job failed')
        return { [f?.failed ? 'failed' : 'retrying']: 1 }
      }
    },
  }

  /**
   * Under the job's row lock: not cancelled meanwhile, and its claim still this worker's (heartbeat
   * renews it, and returns nothing if another worker took the job after our lease ran out). The
   * lock is held to the commit, so no other worker can claim the job between this check and the
   * batch it guards: a batch is written only by the job's one holder, with its checkpoint.
   */
  async function stillOurs(tx: Queryable, id: string): Promise<boolean> {
    const [j] = await tx.query(`SELECT status FROM jobs WHERE id = $1 FOR UPDATE`, [id])
    return !!j && LIVE.includes(j.status) && (await heartbeat(tx, jobsQueue, worker, [id])).has(id)
  }

  type Outcome = 'finished' | 'stopped' | 'lost' | 'limited'

  /**
   * A job's start, as Notify's process_job: all its rows against the daily limit of the day it runs
   * (a scheduled job may run on another day than its upload), counted at once so texts sent meanwhile
   * cannot take the room it was given. One that would pass the limit does not start: Notify's status
   * `sending limits exceeded`, with its message. Test keys do not count; a job counted already (a
   * retry) or begun before counting at start existed (counted per batch, as it was) is not counted again.
   */
  async function start(tx: Queryable, job: Record<string, any>): Promise<'go' | 'limited'> {
    if (job.key_type === 'test' || job.counted_on || job.rows_read > 0) return 'go'
    const s = job.service
    const day = await reserveDay(tx, { id: job.service_id, timezone: s.timezone, messageLimit: s.message_limit }, job.rows)
    if (day) {
      await tx.query(`UPDATE jobs SET counted_on = $2::date WHERE id = $1`, [job.id, day])
      job.counted_on = day
      return 'go'
    }
    const message = limitError({ messageLimit: Number(s.message_limit) } as Service, 'normal', 'daily').message.replace(/'/g, '')
    await finish(tx, jobsQueue, worker, [{ id: job.id }], { set: `status = 'sending limits exceeded', error = '${message}', finished_at = now()` })
    return 'limited'
  }

  async function run(db: Db, job: Record<string, any>, signal: AbortSignal): Promise<{ outcome: Outcome; created: number }> {
    const service = { id: job.service_id, timezone: job.service.timezone } as Service
    // One transaction: the batch's notifications, the checkpoint (data rows read, whatever became of
    // them) and the count made, and the claim renewed; or nothing at all.
    const flush = async (batch: NewNotification[], read: number) => db.transaction(async (tx) => {
      if (!(await stillOurs(tx, job.id))) return false
      const at = new Date()
      if (batch.length) await tx.copyInto('notifications', NOTIFICATION_COLUMNS, batch.map((n) => notificationRow(n, at)))
      // A committed batch is progress: the attempts start anew, so a long job whose workers restart
      // (deploys) is not failed as one that kills them; a batch that kills every worker still is.
      await tx.query(`UPDATE jobs SET status = 'in progress', started_at = coalesce(started_at, now()), rows_done = rows_done + $2, rows_read = $3,
        attempts = CASE WHEN $3 > rows_read THEN 0 ELSE attempts END
        WHERE id = $1`, [job.id, batch.length, read])
      if (batch.length && job.key_type !== 'test' && !job.counted_on) {
        await tx.query(`INSERT INTO daily_counts (service_id, day, texts) VALUES ($1, (now() AT TIME ZONE $2)::date, $3)
          ON CONFLICT (service_id, day) DO UPDATE SET texts = daily_counts.texts + excluded.texts`, [job.service_id, job.service.timezone, batch.length])
      }
      return true
    })
    const began = await db.transaction(async (tx) => ((await stillOurs(tx, job.id)) ? start(tx, job) : 'lost'))
    if (began !== 'go') return { outcome: began, created: 0 }
    if (!(await flush([], job.rows_read))) return { outcome: 'lost', created: 0 }
    // A file stored before sealing (named .csv) may still be plaintext; one named as sealed must be, untouched.
    const { body: stored } = await opts.store.open(job.file_uri)
    const body = opts.sealer.files.open(stored, job.id, { plaintext: !job.file_uri.endsWith(SEALED) })
    let r: { outcome: Outcome | 'read'; created: number }
    try {
      r = await create(db, job, service, body, flush, signal)
    } finally {
      body.destroy() // a stop leaves the rest of the file unread
    }
    if (r.outcome !== 'read') return r as { outcome: Outcome; created: number }
    const done = await db.transaction(async (tx) => {
      const ok = await finish(tx, jobsQueue, worker, [{ id: job.id }], { set: `status = 'finished', finished_at = now()`, where: `t.status = 'in progress'` })
      // Rows skipped (a number no longer valid) made no text: their room is given back.
      const [j] = ok.has(job.id) && job.counted_on ? await tx.query(`SELECT rows - rows_done AS unused FROM jobs WHERE id = $1`, [job.id]) : []
      if (j) await giveBackDay(tx, job.service_id, job.counted_on, j.unused)
      return ok
    })
    return { outcome: done.has(job.id) ? 'finished' : 'lost', created: r.created }
  }

  async function create(db: Db, job: Record<string, any>, service: Service, body: Readable, flush: (batch: NewNotification[], read: number) => Promise<boolean>,
    signal: AbortSignal): Promise<{ outcome: Outcome | 'read'; created: number }> {
    let created = 0
    let batch: NewNotification[] = []
    let index = 0
    for await (const r of jobRows(body, placeholders(job.body))) {
      // Made (or skipped) by an earlier run of this job: the checkpoint counts data rows, not notifications.
      if (index++ < job.rows_read) continue
      const phone = checkPhone(r.phone, opts.region)
      if (!phone.ok) continue // checked at upload; cannot happen unless the file changed
      batch.push({
        id: randomUUID(), service, templateId: job.template_id, templateVersion: job.template_version, apiKeyId: job.api_key_id, keyType: job.key_type,
        reference: null, recipientHash: opts.sealer.hash(phone.e164), recipientCt: opts.sealer.seal(r.phone.trim()),
        personalisationCt: Object.keys(r.personalisation).length ? opts.sealer.seal(JSON.stringify(r.personalisation)) : null,
        international: phone.international, jobId: job.id, jobRow: r.row,
      })
      if (batch.length >= size) {
        if (!(await flush(batch, index))) return { outcome: 'lost', created }
        if (created === 0) await statistics(db)
        created += batch.length
        batch = []
        // A batch boundary: a stop (SIGTERM) ends here, and the next holder resumes after `index`.
        if (signal.aborted) return { outcome: 'stopped', created }
      }
    }
    if (!(await flush(batch, index))) return { outcome: 'lost', created }
    return { outcome: 'read', created: created + batch.length }
  }
}
