/**
 * Herald's own routes beside Notify's, with the same auth: monthly usage from the billing facts, and
 * reports as CSV streamed to the caller (a job's, or the service's over local days).
 */
import { Readable } from 'node:stream'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import type { Db } from '../../db/types.ts'
import type { Sealer } from '../../privacy/seal.ts'
import { monthlyUsage } from '../facts/facts.ts'
import { reportCsv, ReportNotFound, type ReportScope } from '../reports/report.ts'
import type { Authenticator } from './auth.ts'
import { notFound, shown, validation } from './errors.ts'

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i
const DAY = /^\d{4}-\d{2}-\d{2}$/

/** A real calendar day: Date.parse takes 2026-02-31 (as 3 March), PostgreSQL does not. */
export const isDay = (v: unknown): v is string => {
  if (typeof v !== 'string' || !DAY.test(v)) return false
  const t = Date.parse(`${v}T00:00:00Z`)
  return !Number.isNaN(t) && new Date(t).toISOString().slice(0, 10) === v
}

/** Sends the report, or answers 404 before any byte if its job or service is not there. */
async function sendCsv(reply: FastifyReply, csv: AsyncGenerator<string>, filename: string) {
  let first: IteratorResult<string>
  try {
    first = await csv.next()
  } catch (err) {
    if (err instanceof ReportNotFound) throw notFound()
    throw err
  }
  async function* rest() {
    if (!first.done) yield first.value
    yield* csv
  }
  return reply.type('text/csv; charset=utf-8').header('content-disposition', `attachment; filename="${filename}"`).send(Readable.from(rest()))
}

/** `reportsDb`: where the CSV reports read (a read replica, or the database itself); usage reads the primary's facts. */
export function reportRoutes(deps: { db: Db; reportsDb: Db; sealer: Sealer; auth: Authenticator }) {
  const caller = (req: FastifyRequest) => deps.auth.callerOf(req)
  return (app: FastifyInstance) => {
    app.get<{ Querystring: { year?: string } }>('/v2/usage', async (req) => {
      const { service } = await caller(req)
      const year = req.query.year === undefined ? new Date().getUTCFullYear() : Number(req.query.year)
      if (!Number.isInteger(year) || year < 2000 || year > 9999) throw validation(`year ${shown(req.query.year)} is not a year`)
      return { service_id: service.id, year, months: await monthlyUsage(deps.db, service.id, year) }
    })

    app.get<{ Params: { id: string } }>('/v2/jobs/:id/report', async (req, reply) => {
      const { service } = await caller(req)
      if (!UUID.test(req.params.id)) throw validation('job_id is not a valid UUID')
      return sendCsv(reply, reportCsv(deps.reportsDb, deps.sealer, { serviceId: service.id, jobId: req.params.id.toLowerCase() }), `job-${req.params.id}.csv`)
    })

    app.get<{ Querystring: { from?: string; to?: string } }>('/v2/reports/notifications', async (req, reply) => {
      const { service } = await caller(req)
      const { from, to } = req.query
      const errors = [!isDay(from) && `from ${shown(from ?? '')} is not a date (YYYY-MM-DD)`, !isDay(to) && `to ${shown(to ?? '')} is not a date (YYYY-MM-DD)`].filter((e): e is string => !!e)
      if (!errors.length && to! < from!) errors.push('to is before from')
      if (errors.length) throw validation(errors)
      const scope: ReportScope = { serviceId: service.id, from: from!, to: to! }
      return sendCsv(reply, reportCsv(deps.reportsDb, deps.sealer, scope), `notifications-${from}-to-${to}.csv`)
    })
  }
}
