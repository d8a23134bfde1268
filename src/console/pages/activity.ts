/**
 * What a service sent, as GOV.UK Notify's admin app shows it: activity (texts by status, newest
 * first, found by number through the keyed hash), usage and cost by month, and the notifications
 * report as CSV. The same functions as the API's (messaging/activity.ts, facts/facts.ts monthlyUsage,
 * reports/report.ts reportCsv).
 */
import { Readable } from 'node:stream'
import type { FastifyReply } from 'fastify'
import { serviceActivity, STATUS_GROUPS, type StatusGroup } from '../../messaging/activity.ts'
import { isDay } from '../../messaging/api/reports.ts'
import { monthlyUsage } from '../../messaging/facts/facts.ts'
import { checkPhone } from '../../messaging/phone.ts'
import { reportCsv, ReportNotFound } from '../../messaging/reports/report.ts'
import type { Service } from '../../messaging/services.ts'
import { httpError, type Pages } from '../app.ts'
import { field, serviceFor, UUID, type Form } from './services.ts'

/** A time as the service's people read it: in its time zone. */
export function timeIn(service: Service): (t: Date | string | null | undefined) => string {
  const f = new Intl.DateTimeFormat('en-US', { timeZone: service.timezone, dateStyle: 'medium', timeStyle: 'short' })
  return (t) => (t ? f.format(new Date(t)) : '')
}

/** Streams a report; a job or service that is not there is a 404 before any byte. */
export async function sendCsv(reply: FastifyReply, csv: AsyncGenerator<string>, filename: string) {
  let first: IteratorResult<string>
  try {
    first = await csv.next()
  } catch (err) {
    if (err instanceof ReportNotFound) throw httpError(404, 'There is no such report')
    throw err
  }
  async function* rest() {
    if (!first.done) yield first.value
    yield* csv
  }
  return reply.type('text/csv; charset=utf-8').header('content-disposition', `attachment; filename="${filename}"`).send(Readable.from(rest()))
}

/** The service's local day `days` before today, YYYY-MM-DD. */
const localDay = (service: Service, daysBefore = 0) =>
  new Intl.DateTimeFormat('en-CA', { timeZone: service.timezone }).format(new Date(Date.now() - daysBefore * 86_400_000))

type P = { Params: { sid: string }; Querystring: Form }

export const activityPages: Pages = (scope, { db, sealer, config, render }) => {
  scope.get<P>('/services/:sid/activity', async (req, reply) => {
    const service = await serviceFor(db, req.user!, req.params.sid, 'view_activity')
    const status = field(req.query, 'status')
    const phone = field(req.query, 'phone').trim()
    const olderThan = field(req.query, 'older_than')
    const view = { service, status, phone, when: timeIn(service), from: localDay(service, 6), to: localDay(service) }
    const bad = (error: string, errorField: string) => render(reply.code(400), 'activity', { ...view, error, errorField, counts: undefined, rows: [] })
    if (status && !(status in STATUS_GROUPS)) return bad('Choose sending, delivered or failed', 'status')
    if (olderThan && !UUID.test(olderThan)) return bad('That page link is not right: start from the first page', 'status')
    let recipient: Buffer | undefined
    if (phone) {
      // Found by the keyed hash of the number as it was stored (E.164): the same number however it is typed.
      const p = checkPhone(phone, config.exposure.defaultRegion)
      if (!p.ok) return bad(`Enter a phone number: ${p.message.toLowerCase()}`, 'phone')
      recipient = sealer.hash(p.e164)
    }
    const page = await serviceActivity(db, sealer, service.id, { status: (status || undefined) as StatusGroup | undefined, recipient, olderThan: olderThan || undefined })
    const query = (extra: Record<string, string>) => `?${new URLSearchParams({ ...(status ? { status } : {}), ...(phone ? { phone } : {}), ...extra })}`
    return render(reply, 'activity', { ...view, ...page, query })
  })

  scope.get<P>('/services/:sid/usage', async (req, reply) => {
    const service = await serviceFor(db, req.user!, req.params.sid, 'view_activity')
    const given = field(req.query, 'year')
    const year = given === '' ? new Date().getUTCFullYear() : Number(given)
    if (!/^\d{4}$/.test(given || String(year)) || year < 2000) throw httpError(400, `year: enter a year such as ${new Date().getUTCFullYear()}`)
    const rows = await monthlyUsage(db, service.id, year)
    // Every month of the year, the rates of a month added up (a month may span a rate change).
    const months = Array.from({ length: 12 }, (_, i) => {
      const month = `${year}-${String(i + 1).padStart(2, '0')}`
      const of = rows.filter((r) => r.month === month)
      return { month, label: new Date(Date.UTC(year, i, 15)).toLocaleString('en-US', { month: 'long', timeZone: 'UTC' }),
        texts: of.reduce((n, r) => n + r.notifications_sent, 0), units: of.reduce((n, r) => n + r.billable_units, 0),
        chargeable: of.reduce((n, r) => n + r.chargeable_units, 0), cost: of.reduce((n, r) => n + r.cost, 0) }
    })
    const total = months.reduce((t, m) => ({ texts: t.texts + m.texts, units: t.units + m.units, chargeable: t.chargeable + m.chargeable, cost: t.cost + m.cost }),
      { texts: 0, units: 0, chargeable: 0, cost: 0 })
    return render(reply, 'usage', { service, year, months, total })
  })

  scope.get<P>('/services/:sid/reports/notifications.csv', async (req, reply) => {
    const service = await serviceFor(db, req.user!, req.params.sid, 'view_activity')
    const from = field(req.query, 'from') || localDay(service, 6)
    const to = field(req.query, 'to') || localDay(service)
    if (!isDay(from)) throw httpError(400, 'from: enter a date as YYYY-MM-DD')
    if (!isDay(to)) throw httpError(400, 'to: enter a date as YYYY-MM-DD')
    if (to < from) throw httpError(400, 'to: the last day must not be before the first')
    return sendCsv(reply, reportCsv(db, sealer, { serviceId: service.id, from, to }), `notifications-${from}-to-${to}.csv`)
  })
}
