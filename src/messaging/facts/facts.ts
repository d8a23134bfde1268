/**
 * Facts: what billing and statistics read, computed from notifications_all_time_view (both tables)
 * per service and local day (the service's time zone) and replaced whole in one transaction, so a
 * rerun gives the same rows, a status that changed since is counted where it is now, and a reader
 * never sees a day half-replaced. Test keys are never billed nor counted. Statuses settle for 3
 * days (72 hours to a final receipt), so the nightly run recomputes the last 3 days.
 */
import type { Db, Queryable } from '../../db/types.ts'

/** Statuses a text is billed in: handed to a provider, whatever it made of it (GOV.UK Notify's rule). */
export const BILLABLE = ['sending', 'sent', 'delivered', 'pending', 'temporary-failure', 'permanent-failure']
export const SETTLE_DAYS = 3

/**
 * The billing facts of one service-day, as SELECT (the benchmarks time it alone). Grouped on the
 * columns as stored and only then given defaults: the grouping is most of the query's time.
 */
export const BILLING_SQL = (view = 'notifications_all_time_view') => `
  SELECT template_id, notification_type, coalesce(provider, 'none') AS provider, coalesce(rate_multiplier, 1) AS rate_multiplier, international,
         coalesce(units, 0) AS billable_units, sent AS notifications_sent
  FROM (SELECT n.template_id, n.notification_type, n.provider, n.rate_multiplier, n.international, sum(n.billable_units) AS units, count(*) AS sent
        FROM ${view} n
        WHERE n.service_id = $1 AND n.created_at >= $2 AND n.created_at < $3 AND n.key_type <> 'test' AND n.status = ANY($4::text[])
        GROUP BY 1, 2, 3, 4, 5) g`

/** The status facts of one service-day, as SELECT. */
export const STATUS_SQL = (view = 'notifications_all_time_view') => `
  SELECT n.template_id, n.job_id, n.notification_type, n.key_type, n.status, count(*) AS notification_count
  FROM ${view} n
  WHERE n.service_id = $1 AND n.created_at >= $2 AND n.created_at < $3 AND n.key_type <> 'test'
  GROUP BY 1, 2, 3, 4, 5`

/** One local day of a service as the instants it starts and ends (23 or 25 hours across a clock change). */
const DAY_BOUNDS = `SELECT ($2::date)::timestamp AT TIME ZONE timezone AS start, ($2::date + 1)::timestamp AT TIME ZONE timezone AS end
  FROM services WHERE id = $1`

export async function computeDay(db: Db, serviceId: string, day: string): Promise<{ billing: number; status: number }> {
  return db.transaction(async (tx: Queryable) => {
    const [b] = await tx.query(DAY_BOUNDS, [serviceId, day])
    if (!b) throw new Error(`no service ${serviceId}`)
    const span = [serviceId, b.start, b.end]
    await tx.query(`DELETE FROM ft_billing WHERE service_id = $1 AND local_date = $2`, [serviceId, day])
    await tx.query(`DELETE FROM ft_notification_status WHERE service_id = $1 AND local_date = $2`, [serviceId, day])
    const billing = await tx.query(
      `INSERT INTO ft_billing (local_date, service_id, template_id, notification_type, provider, rate_multiplier, international, rate, billable_units, notifications_sent)
       SELECT $5::date, $1, f.template_id, f.notification_type, f.provider, f.rate_multiplier, f.international,
              -- Texts are priced by fragment; emails are counted, not priced.
              CASE WHEN f.notification_type = 'sms' THEN coalesce((SELECT rate FROM sms_rates WHERE valid_from <= $5::date ORDER BY valid_from DESC LIMIT 1), 0) ELSE 0 END,
              f.billable_units, f.notifications_sent
       FROM (${BILLING_SQL()}) f RETURNING 1`, [...span, BILLABLE, day])
    const status = await tx.query(
      `INSERT INTO ft_notification_status (local_date, service_id, template_id, job_id, notification_type, key_type, status, notification_count)
       SELECT $4::date, $1, f.template_id, f.job_id, f.notification_type, f.key_type, f.status, f.notification_count
       FROM (${STATUS_SQL()}) f RETURNING 1`, [...span, day])
    return { billing: billing.length, status: status.length }
  })
}

export interface FactsRun { days: number; billingRows: number; statusRows: number; stopped?: true }

/**
 * Facts for every service over local days `from`..`to` (inclusive, YYYY-MM-DD); without them, the
 * last SETTLE_DAYS days before today in each service's own time zone (the nightly run). `onDay`
 * follows each service-day (the nightly run renews its claim there); `signal` stops the run before
 * the next one (each day is whole or untouched, so a rerun completes it).
 */
export async function computeFacts(db: Db, range: { from?: string; to?: string; asOf?: Date } = {},
  onDay?: (done: number, total: number) => void | Promise<void>, signal?: AbortSignal): Promise<FactsRun> {
  const days = await db.query<{ service_id: string; day: string }>(
    range.from
      ? `SELECT s.id AS service_id, d::date::text AS day FROM services s, generate_series($1::date, $2::date, interval '1 day') d ORDER BY 2, 1`
      : `SELECT s.id AS service_id, (($1::timestamptz AT TIME ZONE s.timezone)::date - k)::text AS day
         FROM services s, generate_series(1, $2::int) k ORDER BY 2, 1`,
    range.from ? [range.from, range.to ?? range.from] : [range.asOf ?? new Date(), SETTLE_DAYS])
  const run: FactsRun = { days: 0, billingRows: 0, statusRows: 0 }
  for (const d of days) {
    if (signal?.aborted) return { ...run, stopped: true }
    const r = await computeDay(db, d.service_id, d.day)
    run.days++
    run.billingRows += r.billing
    run.statusRows += r.status
    await onDay?.(run.days, days.length)
  }
  return run
}

export interface MonthUsage { month: string; notification_type: string; billable_units: number; chargeable_units: number; notifications_sent: number; rate: number; cost: number }

/**
 * Monthly usage of a service in a calendar year, from ft_billing (days up to the last facts run):
 * billable units are fragments; chargeable units weigh them by the rate multiplier; cost prices
 * those at each day's rate.
 */
export async function monthlyUsage(db: Queryable, serviceId: string, year: number): Promise<MonthUsage[]> {
  const rows = await db.query(
    `SELECT to_char(local_date, 'YYYY-MM') AS month, notification_type, rate,
            sum(billable_units)::bigint AS billable_units, sum(billable_units * rate_multiplier) AS chargeable_units,
            sum(notifications_sent)::bigint AS notifications_sent, sum(billable_units * rate_multiplier * rate) AS cost
     FROM ft_billing WHERE service_id = $1 AND local_date >= make_date($2, 1, 1) AND local_date < make_date($2 + 1, 1, 1)
     GROUP BY 1, 2, 3 ORDER BY 1, 2, 3`, [serviceId, year])
  return rows.map((r) => ({ month: r.month, notification_type: r.notification_type, billable_units: Number(r.billable_units),
    chargeable_units: Number(r.chargeable_units), notifications_sent: Number(r.notifications_sent), rate: Number(r.rate), cost: Number(r.cost) }))
}
