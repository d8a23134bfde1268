/**
 * Bulk jobs as people follow them (`herald jobs`, GET /v2/jobs/:id, the console's jobs pages): each
 * job with its texts counted by status, from both tables (notifications and what retention moved).
 */
import type { Queryable } from '../../db/types.ts'
import type { JobProblem } from './upload.ts'

/** Notify's groups of statuses, as its pages count them. */
export const SENDING = ['created', 'sending', 'pending']
export const DELIVERED = ['delivered', 'sent']
export const FAILED = ['technical-failure', 'temporary-failure', 'permanent-failure', 'validation-failed']

export interface JobSummary {
  id: string; service: string; template: string | null; original_name: string; status: string; rows: number; rows_done: number
  scheduled_for: Date | null; created_at: Date; finished_at: Date | null; error: string | null; sending: number; delivered: number; failed: number
}

/**
 * The latest jobs, newest first: of one service, or of all. An upload not started (`uploaded`, the
 * console's check page) is not a job yet, as in Notify, and is left out.
 */
export async function listJobs(db: Queryable, serviceId: string | null, limit = 50): Promise<JobSummary[]> {
  return db.query<JobSummary>(
    `SELECT j.id, s.name AS service, t.name AS template, j.original_name, j.status, j.rows, j.rows_done, j.scheduled_for, j.created_at, j.finished_at, j.error,
            c.sending, c.delivered, c.failed
     FROM jobs j JOIN services s ON s.id = j.service_id LEFT JOIN templates t ON t.id = j.template_id,
     LATERAL (SELECT count(*) FILTER (WHERE n.status = ANY($3))::int AS sending, count(*) FILTER (WHERE n.status = ANY($4))::int AS delivered,
                     count(*) FILTER (WHERE n.status = ANY($5))::int AS failed
              FROM notifications_all_time_view n WHERE n.job_id = j.id) c
     WHERE ($1::uuid IS NULL OR j.service_id = $1) AND j.status <> 'uploaded' ORDER BY j.created_at DESC LIMIT $2`,
    [serviceId, limit, SENDING, DELIVERED, FAILED])
}

export interface JobDetail {
  id: string; service_id: string; template_id: string; template_version: number; template: string | null; original_name: string
  status: string; rows: number; rows_done: number; bad_rows: number; problems: JobProblem[]; scheduled_for: Date | null; created_at: Date
  started_at: Date | null; finished_at: Date | null; error: string | null; created_by: string
  /** Its texts by status, in status order. */
  statistics: { status: string; count: number }[]
}

/** One job of a service with its texts counted by status; none if it is not this service's. */
export async function jobDetail(db: Queryable, serviceId: string, id: string): Promise<JobDetail | undefined> {
  const [j] = await db.query(
    `SELECT j.id, j.service_id, j.template_id, j.template_version, v.name AS template, j.original_name, j.status, j.rows, j.rows_done, j.bad_rows,
            j.problems, j.scheduled_for, j.created_at, j.started_at, j.finished_at, j.error, j.created_by
     FROM jobs j LEFT JOIN template_versions v ON v.template_id = j.template_id AND v.version = j.template_version
     WHERE j.id = $1 AND j.service_id = $2`, [id, serviceId])
  if (!j) return undefined
  const statistics = await db.query<{ status: string; count: number }>(
    `SELECT status, count(*)::int AS count FROM notifications_all_time_view WHERE job_id = $1 GROUP BY 1 ORDER BY 1`, [id])
  // jsonb comes back parsed from node-postgres and PGlite alike; a string only from a driver that does not.
  const problems = typeof j.problems === 'string' ? JSON.parse(j.problems) : j.problems
  return { ...j, problems, statistics } as JobDetail
}
