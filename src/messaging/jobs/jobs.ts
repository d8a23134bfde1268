/**
 * Bulk jobs: an uploaded CSV is checked row by row (every problem named with its row), stored in the
 * object store, and recorded; the jobs engine then creates its notifications in batches, each with
 * the job's progress in one transaction (a restart resumes after the last batch). A job may be
 * scheduled, and cancelled until it has finished (its texts not yet sent are cancelled too).
 */
import { randomUUID } from 'node:crypto'
import type { Db } from '../../db/types.ts'
import type { BatchEngine } from '../../engine/engine.ts'
import { errorText, type Logger } from '../../log.ts'
import type { Sealer } from '../../privacy/seal.ts'
import type { ObjectStore } from '../../storage/types.ts'
import { NOTIFICATION_COLUMNS, notificationRow, type NewNotification } from '../api/admit.ts'
import type { Directory } from '../api/directory.ts'
import { ApiError } from '../api/errors.ts'
import type { KeyType } from '../keys.ts'
import { checkPhone } from '../phone.ts'
import { prepareText } from '../prepare.ts'
import type { Service, Template } from '../services.ts'
import { placeholders } from '../templates.ts'
import { CsvProblem, jobRows } from './csv.ts'

const MAX_ERRORS = 50
const BATCH = 2000
const LEASE_SECONDS = 300

export interface JobInput { service: Service; template: Template; keyType: KeyType; apiKeyId: string | null; csv: Buffer; name: string; scheduledFor?: Date; createdBy: string }
export type JobCheck = { ok: true; id: string; rows: number; status: string } | { ok: false; errors: string[] }

interface Ctx { db: Db; dir: Directory; sealer: Sealer; region: string; store: ObjectStore }

/** Checks every row, then stores the file and records the job; or names the problems, by row. */
export async function createJob(ctx: Ctx, j: JobInput): Promise<JobCheck> {
  const errors: string[] = []
  let rows = 0
  let bad = 0
  try {
    for await (const r of jobRows(j.csv, placeholders(j.template.body))) {
      rows++
      const ready = await prepareText(ctx, j.service, j.keyType, j.template, r.phone, r.personalisation)
      if (ready instanceof ApiError) {
        bad++
        if (errors.length < MAX_ERRORS) errors.push(`row ${r.row}: ${ready.message}`)
      }
    }
  } catch (err) {
    if (err instanceof CsvProblem) return { ok: false, errors: [err.message] }
    return { ok: false, errors: [`The file is not a CSV file: ${(err as Error).message}`] }
  }
  if (rows === 0) return { ok: false, errors: ['The file has no recipients'] }
  if (bad > errors.length) errors.push(`and ${bad - errors.length} more rows with problems`)
  if (errors.length) return { ok: false, errors }
  const id = randomUUID()
  const uri = await ctx.store.put(`${id}.csv`, j.csv)
  const status = j.scheduledFor && j.scheduledFor > new Date() ? 'scheduled' : 'pending'
  await ctx.db.query(
    `INSERT INTO jobs (id, service_id, template_id, template_version, api_key_id, key_type, file_uri, original_name, rows, status, scheduled_for, created_by)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)`,
    [id, j.service.id, j.template.id, j.template.version, j.apiKeyId, j.keyType, uri, j.name, rows, status, j.scheduledFor ?? null, j.createdBy])
  return { ok: true, id, rows, status }
}

/** Cancels a job not yet finished, and its texts not yet handed to a provider. */
export async function cancelJob(db: Db, serviceId: string, id: string): Promise<boolean> {
  return db.transaction(async (tx) => {
    const [job] = await tx.query(`UPDATE jobs SET status = 'cancelled', finished_at = now() WHERE id = $1 AND service_id = $2
      AND status IN ('scheduled', 'pending', 'in progress') RETURNING id`, [id, serviceId])
    if (!job) return false
    await tx.query(`UPDATE notifications SET status = 'cancelled', completed_at = now(), updated_at = now() WHERE job_id = $1 AND status = 'created'`, [id])
    return true
  })
}

export function jobsEngine(ctx: Omit<Ctx, 'dir' | 'db'>, log: Logger): BatchEngine {
  return {
    name: 'jobs',
    batchSize: BATCH,
    async step(db): Promise<Record<string, number>> {
      const [job] = await db.query(
        `UPDATE jobs SET status = 'in progress', started_at = coalesce(started_at, now()), claimed_until = now() + make_interval(secs => $1)
         WHERE id = (SELECT id FROM jobs WHERE (status IN ('scheduled', 'pending') AND coalesce(scheduled_for, created_at) <= now())
                       OR (status = 'in progress' AND claimed_until < now())
                     ORDER BY coalesce(scheduled_for, created_at) LIMIT 1 FOR UPDATE SKIP LOCKED)
         RETURNING *, (SELECT body FROM template_versions v WHERE v.template_id = jobs.template_id AND v.version = jobs.template_version) AS body,
           (SELECT row_to_json(s) FROM services s WHERE s.id = jobs.service_id) AS service`, [LEASE_SECONDS])
      if (!job) return {}
      try {
        const created = await run(db, job)
        log.info({ job: job.id, created }, 'bulk job done')
        return { rows: created }
      } catch (err) {
        // errorText: a database error by its SQLSTATE, never the values (a number) it may quote.
        await db.query(`UPDATE jobs SET status = 'error', error = $2, finished_at = now() WHERE id = $1 AND status = 'in progress'`, [job.id, errorText(err)])
        log.error({ job: job.id, err: errorText(err) }, 'bulk job failed')
        return { failed: 1 }
      }
    },
  }

  async function run(db: Db, job: Record<string, any>): Promise<number> {
    const { body } = await ctx.store.open(job.file_uri)
    const service = { id: job.service_id, timezone: job.service.timezone } as Service
    let batch: NewNotification[] = []
    let created = 0
    const flush = async () => {
      const live = await db.transaction(async (tx) => {
        const [j] = await tx.query(`SELECT status FROM jobs WHERE id = $1 FOR UPDATE`, [job.id])
        if (j.status !== 'in progress') return false
        const at = new Date()
        await tx.copyInto('notifications', NOTIFICATION_COLUMNS, batch.map((n) => notificationRow(n, at)))
        await tx.query(`UPDATE jobs SET rows_done = rows_done + $2, claimed_until = now() + make_interval(secs => $3) WHERE id = $1`, [job.id, batch.length, LEASE_SECONDS])
        if (job.key_type !== 'test') {
          await tx.query(`INSERT INTO daily_counts (service_id, day, texts) VALUES ($1, (now() AT TIME ZONE $2)::date, $3)
            ON CONFLICT (service_id, day) DO UPDATE SET texts = daily_counts.texts + excluded.texts`, [job.service_id, job.service.timezone, batch.length])
        }
        return true
      })
      created += live ? batch.length : 0
      batch = []
      return live
    }
    let index = 0
    for await (const r of jobRows(body, placeholders(job.body))) {
      if (index++ < job.rows_done) continue // made by an earlier run of this job
      const phone = checkPhone(r.phone, ctx.region)
      if (!phone.ok) continue // checked at upload; cannot happen unless the file changed
      batch.push({
        id: randomUUID(), service, templateId: job.template_id, templateVersion: job.template_version, apiKeyId: job.api_key_id, keyType: job.key_type,
        reference: null, recipientHash: ctx.sealer.hash(phone.e164), recipientCt: ctx.sealer.seal(r.phone.trim()),
        personalisationCt: Object.keys(r.personalisation).length ? ctx.sealer.seal(JSON.stringify(r.personalisation)) : null,
        international: phone.international, jobId: job.id, jobRow: r.row,
      })
      if (batch.length >= BATCH && !(await flush())) return created
    }
    if (batch.length && !(await flush())) return created
    await db.query(`UPDATE jobs SET status = 'finished', finished_at = now(), claimed_until = NULL WHERE id = $1 AND status = 'in progress'`, [job.id])
    return created
  }
}
