/**
 * Bulk jobs over the API (Herald's own routes beside Notify's): upload a CSV for a template, follow
 * its progress, cancel it. The same auth as the rest of /v2, and the same limits (admit.ts): an upload
 * is a request under the rate limit, and its rows must fit in today's daily limit.
 */
import type { FastifyInstance, FastifyRequest } from 'fastify'
import type { Db } from '../../db/types.ts'
import type { ObjectStore } from '../../storage/types.ts'
import { cancelJob, createJob } from '../jobs/jobs.ts'
import { jobDetail } from '../jobs/view.ts'
import type { Authenticator } from './auth.ts'
import type { Directory } from './directory.ts'
import { badRequest, notFound, validation } from './errors.ts'
import { limitError } from './admit.ts'
import { notifyTime } from './present.ts'
import type { Sealer } from '../../privacy/seal.ts'

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i

export async function jobView(db: Db, serviceId: string, id: string) {
  const j = await jobDetail(db, serviceId, id)
  if (!j) return undefined
  return {
    id: j.id, status: j.status, template: { id: j.template_id, version: j.template_version }, original_file_name: j.original_name,
    rows: j.rows, notifications_created: j.rows_done, scheduled_for: notifyTime(j.scheduled_for), created_at: notifyTime(j.created_at),
    started_at: notifyTime(j.started_at), finished_at: notifyTime(j.finished_at), error: j.error, statistics: j.statistics,
  }
}

export function jobRoutes(deps: { db: Db; dir: Directory; sealer: Sealer; region: string; store: ObjectStore; auth: Authenticator }) {
  const caller = (req: FastifyRequest) => deps.auth.callerOf(req)
  return (app: FastifyInstance) => {
    app.post('/v2/jobs', async (req, reply) => {
      const { service, key } = await caller(req)
      const b = (req.body ?? {}) as { template_id?: unknown; csv?: unknown; filename?: unknown; scheduled_for?: unknown }
      const errors: string[] = []
      if (typeof b.template_id !== 'string' || !UUID.test(b.template_id)) errors.push('template_id is not a valid UUID')
      if (typeof b.csv !== 'string' || b.csv.length === 0) errors.push('csv is a required property')
      const at = typeof b.scheduled_for === 'string' ? new Date(b.scheduled_for) : undefined
      if (b.scheduled_for !== undefined && (!at || Number.isNaN(at.getTime()))) errors.push('scheduled_for is not a date-time')
      if (errors.length) throw validation(errors)
      const template = await deps.dir.template(service.id, (b.template_id as string).toLowerCase())
      if (!template) throw badRequest('Template not found')
      if (template.archived) throw badRequest('Template has been deleted')
      const r = await createJob(deps, {
        service, template, keyType: key.keyType, apiKeyId: key.id, csv: Buffer.from(b.csv as string, 'utf8'),
        name: typeof b.filename === 'string' ? b.filename : 'upload.csv', scheduledFor: at, createdBy: `api key ${key.id}`,
      })
      if (!r.ok && r.limit) throw limitError(service, key.keyType, r.limit)
      if (!r.ok) throw validation(r.errors)
      return reply.code(201).send(await jobView(deps.db, service.id, r.id))
    })
    app.get<{ Params: { id: string } }>('/v2/jobs/:id', async (req) => {
      const { service } = await caller(req)
      if (!UUID.test(req.params.id)) throw validation('job_id is not a valid UUID')
      return (await jobView(deps.db, service.id, req.params.id)) ?? Promise.reject(notFound())
    })
    app.get('/v2/jobs', async (req) => {
      const { service } = await caller(req)
      const ids = await deps.db.query(`SELECT id FROM jobs WHERE service_id = $1 ORDER BY created_at DESC LIMIT 250`, [service.id])
      return { jobs: await Promise.all(ids.map((r) => jobView(deps.db, service.id, r.id))) }
    })
    app.post<{ Params: { id: string } }>('/v2/jobs/:id/cancel', async (req) => {
      const { service } = await caller(req)
      if (!UUID.test(req.params.id)) throw validation('job_id is not a valid UUID')
      const view = await jobView(deps.db, service.id, req.params.id)
      if (!view) throw notFound()
      if (!(await cancelJob(deps.db, service.id, req.params.id))) throw badRequest(`Job is ${view.status}: it cannot be cancelled`)
      return jobView(deps.db, service.id, req.params.id)
    })
  }
}
