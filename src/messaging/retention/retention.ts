/**
 * Retention: a service's notifications older than its retention (whole days in its own time zone,
 * so the boundary is local midnight whatever daylight saving did) leave the notifications table.
 * Live and team ones move to notification_history without recipient or personalisation; test-key
 * ones are deleted. Each batch moves in one statement (DELETE … RETURNING feeding the INSERT), so a
 * reader of notifications_all_time_view sees a notification once, before or after, never twice or
 * not at all. A bulk job's file goes from the object store once its rows are past retention.
 * The history's conflict is named by its key's constraint, not its columns: (id), or (id, created_at)
 * once the tables are partitioned by day (src/db/optional/partition-by-day.ts); created_at never changes.
 */
import type { Db } from '../../db/types.ts'
import type { Logger } from '../../log.ts'
import type { ObjectStore } from '../../storage/types.ts'
import { deleteReceivedTexts } from '../inbound/receive.ts'

export const DEFAULT_RETENTION_DAYS = 7
export const NOTIFICATION_TYPES = ['sms', 'email'] as const
const BATCH = 10_000

/** What the history keeps of a notification: everything but who it was for and what it said. */
const HISTORY_COLUMNS = `id, service_id, template_id, template_version, notification_type, api_key_id, key_type, job_id, job_row, reference,
  international, status, billable_units, rate_multiplier, provider, created_at, sent_at, completed_at, updated_at, failure_reason, failure_code`

/** `received`: texts residents sent the service (src/messaging/inbound/), deleted with its sms. */
export interface RetentionCounts { archived: number; deleted: number; files: number; received: number }
export interface ServiceRetention extends RetentionCounts { serviceId: string; name: string; type: string; days: number; cutoff: Date }

export interface RetentionOptions {
  store: ObjectStore
  log: Logger
  /** The moment retention is judged from (tests, and a run that catches up); default now. */
  asOf?: Date
  batch?: number
  /** After each batch, for progress (and the nightly run's heartbeat). */
  onBatch?: (s: ServiceRetention) => void | Promise<void>
  /** Stops before the next batch: what moved stays moved (each batch is one statement), the rest waits for the next run. */
  signal?: AbortSignal
}

/** Every service and type with its retention and the instant before which its notifications go. */
export async function retentionCutoffs(db: Db, asOf: Date) {
  return db.query<{ service_id: string; name: string; type: string; days: number; cutoff: Date }>(
    `SELECT s.id AS service_id, s.name, t.type, coalesce(r.days_of_retention, $2::int) AS days,
            (((($1::timestamptz AT TIME ZONE s.timezone)::date - coalesce(r.days_of_retention, $2::int)))::timestamp AT TIME ZONE s.timezone) AS cutoff
     FROM services s CROSS JOIN unnest($3::text[]) AS t(type)
     LEFT JOIN service_data_retention r ON r.service_id = s.id AND r.notification_type = t.type
     ORDER BY s.name, array_position($3::text[], t.type)`, [asOf, DEFAULT_RETENTION_DAYS, NOTIFICATION_TYPES])
}

export async function runRetention(db: Db, opts: RetentionOptions): Promise<ServiceRetention[]> {
  const batch = opts.batch ?? BATCH
  const results: ServiceRetention[] = []
  const stopped = () => opts.signal?.aborted ?? false
  for (const c of await retentionCutoffs(db, opts.asOf ?? new Date())) {
    if (stopped()) break
    const s: ServiceRetention = { serviceId: c.service_id, name: c.name, type: c.type, days: c.days, cutoff: new Date(c.cutoff), archived: 0, deleted: 0, files: 0, received: 0 }
    const args = [s.serviceId, s.type, s.cutoff, batch]
    while (!stopped()) {
      const [{ n }] = await db.query(
        `WITH gone AS (DELETE FROM notifications WHERE id IN (
           SELECT id FROM notifications WHERE service_id = $1 AND notification_type = $2 AND created_at < $3 AND key_type = 'test'
           LIMIT $4 FOR UPDATE SKIP LOCKED) RETURNING 1)
         SELECT count(*)::int AS n FROM gone`, args)
      if (n === 0) break
      s.deleted += n
      await opts.onBatch?.(s)
    }
    while (!stopped()) {
      const [{ n }] = await db.query(
        `WITH moved AS (DELETE FROM notifications WHERE id IN (
           SELECT id FROM notifications WHERE service_id = $1 AND notification_type = $2 AND created_at < $3 AND key_type <> 'test'
           ORDER BY created_at LIMIT $4 FOR UPDATE SKIP LOCKED) RETURNING ${HISTORY_COLUMNS}),
         kept AS (INSERT INTO notification_history (${HISTORY_COLUMNS}) SELECT ${HISTORY_COLUMNS} FROM moved
           ON CONFLICT ON CONSTRAINT notification_history_pkey DO UPDATE SET status = excluded.status, billable_units = excluded.billable_units, rate_multiplier = excluded.rate_multiplier,
             provider = excluded.provider, sent_at = excluded.sent_at, completed_at = excluded.completed_at, updated_at = excluded.updated_at,
             failure_reason = excluded.failure_reason, failure_code = excluded.failure_code
           RETURNING 1)
         SELECT count(*)::int AS n FROM kept`, args)
      if (n === 0) break
      s.archived += n
      await opts.onBatch?.(s)
    }
    // Received texts go with the service's texts, after the same days (deleted: nothing of them is kept).
    if (s.type === 'sms') s.received = await deleteReceivedTexts(db, s.serviceId, s.cutoff, batch, stopped)
    // Stopped: the files wait for the next run, as the rows do.
    // Bulk jobs are texts: their files go by the texts' retention.
    if (!stopped() && s.type === 'sms') s.files = await removeJobFiles(db, opts.store, s)
    if (s.archived || s.deleted || s.files || s.received) {
      opts.log.info({ service: s.serviceId, type: s.type, days: s.days, archived: s.archived, deleted: s.deleted, files: s.files, received: s.received },
        'retention: notifications past retention removed')
    }
    results.push(s)
  }
  return results
}

/**
 * Job files whose rows are all past retention (the job ended before the cutoff) leave the object
 * store; so does an upload never started (the console's check page left), by its upload time.
 */
async function removeJobFiles(db: Db, store: ObjectStore, s: ServiceRetention): Promise<number> {
  const jobs = await db.query(
    `SELECT id, file_uri FROM jobs WHERE service_id = $1 AND archived_at IS NULL AND status IN ('uploaded', 'finished', 'cancelled', 'error', 'sending limits exceeded')
       AND coalesce(finished_at, created_at) < $2`, [s.serviceId, s.cutoff])
  for (const j of jobs) {
    if (j.file_uri) await store.remove(j.file_uri)
    await db.query(`UPDATE jobs SET archived_at = now(), file_uri = NULL WHERE id = $1`, [j.id])
  }
  return jobs.length
}

/** Sets a service's retention for a type (3 to 90 days, as GOV.UK Notify allows). */
export async function setRetention(db: Db, serviceId: string, days: number, type = 'sms') {
  if (!Number.isInteger(days) || days < 3 || days > 90) throw new Error('retention must be a whole number of days from 3 to 90')
  if (!(NOTIFICATION_TYPES as readonly string[]).includes(type)) throw new Error(`notification type must be one of ${NOTIFICATION_TYPES.join(', ')}`)
  await db.query(
    `INSERT INTO service_data_retention (service_id, notification_type, days_of_retention) VALUES ($1, $2, $3)
     ON CONFLICT (service_id, notification_type) DO UPDATE SET days_of_retention = excluded.days_of_retention, updated_at = now()`,
    [serviceId, type, days])
}
