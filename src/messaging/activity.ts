/**
 * A service's activity, as GOV.UK Notify's "View notifications" page: its texts of the last 7 days
 * (test keys left out, as the dashboard leaves them), counted by Notify's groups of statuses, and
 * listed newest first a page at a time, by group and by recipient. A recipient is found by the keyed
 * hash of the number (recipient_hash, the Sealer's HMAC, as a team's members are found): there is no
 * plaintext index, and no row is decrypted to search. Only the numbers of the rows on the page are
 * decrypted.
 */
import type { Queryable } from '../db/types.ts'
import type { Sealer } from '../privacy/seal.ts'
import { DELIVERED, FAILED, SENDING } from './jobs/view.ts'

export const ACTIVITY_DAYS = 7
export const ACTIVITY_PAGE = 50
export const STATUS_GROUPS = { sending: SENDING, delivered: DELIVERED, failed: FAILED } as const
export type StatusGroup = keyof typeof STATUS_GROUPS

export interface ActivityRow {
  id: string; phone: string | null; template: string | null; status: string; createdAt: Date; sentAt: Date | null
  jobId: string | null; jobRow: number | null; reference: string | null
  /** Why it failed, in words a person can act on (send/failure-reasons.ts); null when it has not. */
  failureReason: string | null
}
export interface ActivityPage { counts: Record<StatusGroup, number>; rows: ActivityRow[]; olderThan: string | null }

const WINDOW = `n.service_id = $1 AND n.key_type <> 'test' AND n.created_at >= now() - make_interval(days => ${ACTIVITY_DAYS})`

/**
 * One page of a service's activity. `recipient`: the keyed hash of a number in E.164 (sealer.hash);
 * `olderThan`: the last id of the page before.
 */
export async function serviceActivity(db: Queryable, sealer: Sealer, serviceId: string,
  o: { status?: StatusGroup; recipient?: Buffer; olderThan?: string } = {}): Promise<ActivityPage> {
  const counted = await db.query<{ status: string; n: number }>(
    `SELECT n.status, count(*)::int AS n FROM notifications n WHERE ${WINDOW} AND ($2::bytea IS NULL OR n.recipient_hash = $2) GROUP BY 1`,
    [serviceId, o.recipient ?? null])
  const counts = { sending: 0, delivered: 0, failed: 0 }
  for (const c of counted) for (const [g, ss] of Object.entries(STATUS_GROUPS)) if ((ss as readonly string[]).includes(c.status)) counts[g as StatusGroup] += c.n
  const rows = await db.query(
    `SELECT n.id, n.recipient_ct, v.name AS template, n.status, n.failure_reason, n.created_at, n.sent_at, n.job_id, n.job_row, n.reference
     FROM notifications n LEFT JOIN template_versions v ON v.template_id = n.template_id AND v.version = n.template_version
     WHERE ${WINDOW} AND ($2::bytea IS NULL OR n.recipient_hash = $2) AND (cardinality($3::text[]) = 0 OR n.status = ANY($3))
       AND ($4::uuid IS NULL OR (n.created_at, n.id) < (SELECT created_at, id FROM notifications WHERE id = $4 AND service_id = $1))
     ORDER BY n.created_at DESC, n.id DESC LIMIT ${ACTIVITY_PAGE + 1}`,
    [serviceId, o.recipient ?? null, o.status ? [...STATUS_GROUPS[o.status]] : [], o.olderThan ?? null])
  const page = rows.slice(0, ACTIVITY_PAGE)
  return {
    counts,
    rows: page.map((r) => ({
      id: r.id, phone: r.recipient_ct ? sealer.open(Buffer.from(r.recipient_ct)) : null, template: r.template, status: r.status,
      createdAt: r.created_at, sentAt: r.sent_at, jobId: r.job_id, jobRow: r.job_row, reference: r.reference, failureReason: r.failure_reason ?? null,
    })),
    olderThan: rows.length > ACTIVITY_PAGE ? page[page.length - 1].id : null,
  }
}
