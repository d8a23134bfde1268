/**
 * A service's dashboard, as GOV.UK Notify's: texts sent, delivered and failed today and in the last
 * 7 days (today and the 6 days before it, in the service's time zone), in all and by template. The
 * days before today come from the status facts (facts/facts.ts, kept by the nightly run); today,
 * which the facts do not hold yet, from the notifications themselves. Test keys are never counted.
 */
import type { Queryable } from '../db/types.ts'

/** Notify's dashboard words: requested (every text asked for but cancelled ones), delivered, failed. */
export interface Counts { sent: number; delivered: number; failed: number }
export interface TemplateCounts extends Counts { templateId: string; name: string }
export interface Dashboard { today: Counts; week: Counts; templates: TemplateCounts[] }

// 'sent' is a text a provider took that never gives receipts (international): Notify counts it delivered.
const DELIVERED = ['delivered', 'sent']
const FAILED = ['technical-failure', 'temporary-failure', 'permanent-failure', 'validation-failed']

const zero = (): Counts => ({ sent: 0, delivered: 0, failed: 0 })
function add(c: Counts, status: string, n: number) {
  if (status === 'cancelled') return
  c.sent += n
  if (DELIVERED.includes(status)) c.delivered += n
  if (FAILED.includes(status)) c.failed += n
}

export async function serviceDashboard(db: Queryable, serviceId: string): Promise<Dashboard> {
  // One row per template, status and whether it is today's; facts for the 6 days before today.
  const rows = await db.query<{ template_id: string; status: string; today: boolean; n: string | number }>(
    `WITH s AS (SELECT (now() AT TIME ZONE timezone)::date AS today, timezone FROM services WHERE id = $1)
     SELECT f.template_id, f.status, false AS today, sum(f.notification_count) AS n
     FROM ft_notification_status f, s
     WHERE f.service_id = $1 AND f.local_date >= s.today - 6 AND f.local_date < s.today AND f.key_type <> 'test'
     GROUP BY 1, 2
     UNION ALL
     SELECT n.template_id, n.status, true, count(*)
     FROM notifications_all_time_view n, s
     WHERE n.service_id = $1 AND n.created_at >= s.today::timestamp AT TIME ZONE s.timezone AND n.key_type <> 'test'
     GROUP BY 1, 2`, [serviceId])
  const names = new Map((await db.query<{ id: string; name: string }>('SELECT id, name FROM templates WHERE service_id = $1', [serviceId]))
    .map((t) => [t.id, t.name]))
  const d: Dashboard = { today: zero(), week: zero(), templates: [] }
  const byTemplate = new Map<string, TemplateCounts>()
  for (const r of rows) {
    const n = Number(r.n)
    if (r.today) add(d.today, r.status, n)
    add(d.week, r.status, n)
    let t = byTemplate.get(r.template_id)
    if (!t) byTemplate.set(r.template_id, (t = { templateId: r.template_id, name: names.get(r.template_id) ?? 'Deleted template', ...zero() }))
    add(t, r.status, n)
  }
  d.templates = [...byTemplate.values()].filter((t) => t.sent > 0).sort((a, b) => b.sent - a.sent || a.name.localeCompare(b.name))
  return d
}

/** The price of one SMS fragment on a day (today by default), from sms_rates: what the facts bill at. */
export async function smsRate(db: Queryable, day?: string): Promise<number> {
  const [r] = await db.query<{ rate: string | number }>(
    'SELECT rate FROM sms_rates WHERE valid_from <= coalesce($1::date, current_date) ORDER BY valid_from DESC LIMIT 1', [day ?? null])
  return r ? Number(r.rate) : 0
}
