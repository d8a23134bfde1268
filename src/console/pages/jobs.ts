/**
 * Sending a file, as GOV.UK Notify's admin app: upload a CSV for a template, see every row's problem
 * on the check page before anything is sent, then send now or schedule (or cancel); follow the jobs
 * and their progress; download a job's report. The same functions as the API and `herald jobs`
 * (messaging/jobs/): one check, one start, one cancel, one report.
 */
import fastifyMultipart from '@fastify/multipart'
import type { FastifyRequest } from 'fastify'
import { Directory } from '../../messaging/api/directory.ts'
import { cancelJob, JobStateError, startJob, uploadJob } from '../../messaging/jobs/jobs.ts'
import { SCHEDULE_DAYS } from '../../messaging/jobs/upload.ts'
import { DELIVERED, FAILED, jobDetail, listJobs, SENDING, type JobDetail } from '../../messaging/jobs/view.ts'
import { reportCsv } from '../../messaging/reports/report.ts'
import type { Service } from '../../messaging/services.ts'
import { placeholders } from '../../messaging/templates.ts'
import { storeFor } from '../../storage/index.ts'
import { httpError, type Pages } from '../app.ts'
import { canService } from '../users.ts'
import { sendCsv, timeIn } from './activity.ts'
import { field, serviceFor, UUID, type Form } from './services.ts'
import { templateFor } from './templates.ts'

const MAX_FILE = 20 * 1024 * 1024
type P = { Params: { sid: string; tid: string; jid: string }; Body: Form }

/** The times a job may be scheduled for, as Notify offers them: each hour of the next SCHEDULE_DAYS days, in the service's time zone. */
function scheduleSlots(service: Service): { value: string; label: string }[] {
  const first = Math.ceil(Date.now() / 3_600_000 + 0.01) * 3_600_000
  const label = new Intl.DateTimeFormat('en-US', { timeZone: service.timezone, weekday: 'long', month: 'long', day: 'numeric', hour: 'numeric', minute: '2-digit' })
  return Array.from({ length: SCHEDULE_DAYS * 24 }, (_, i) => {
    const at = new Date(first + i * 3_600_000)
    return { value: at.toISOString(), label: label.format(at) }
  })
}

export const jobPages: Pages = (scope, ctx) => {
  const { db, sealer, config, render } = ctx
  const dir = new Directory(db, 0) // the console reads what is there now: no cache
  const upload = { db, dir, sealer, region: config.exposure.defaultRegion, store: storeFor(config.messaging.jobStore, config) }

  /** A job of the service, or 404: another service's job is not there. */
  async function jobOf(service: Service, jid: string): Promise<JobDetail> {
    const job = UUID.test(jid) ? await jobDetail(db, service.id, jid.toLowerCase()) : undefined
    if (!job) throw httpError(404, 'There is no such job in this service')
    return job
  }

  const checkPage = (req: FastifyRequest, service: Service, job: JobDetail, extra: Record<string, unknown> = {}) => ({
    service, job, slots: scheduleSlots(service), when: timeIn(service), canSend: canService(req.user!, service.id, 'send_messages'), ...extra,
  })

  // Multipart only here: the upload is the console's one form with a file.
  void scope.register(async (files) => {
    const names = new WeakMap<FastifyRequest, string>()
    await files.register(fastifyMultipart, {
      attachFieldsToBody: 'keyValues',
      limits: { fileSize: MAX_FILE, files: 1, fields: 5 },
      async onFile(part) {
        names.set(this, part.filename)
        await part.toBuffer()
      },
    })

    files.post<P>('/services/:sid/upload/:tid', async (req, reply) => {
      const service = await serviceFor(db, req.user!, req.params.sid, 'send_messages')
      const template = await templateFor(dir, service, req.params.tid)
      const file = (req.body as Record<string, unknown> | undefined)?.file
      const again = (error: string) => render(reply.code(400), 'job-upload', { service, template, placeholders: placeholders(template.body), error, errorField: 'file' })
      if (template.archived) return again('This template has been deleted: choose another')
      if (!Buffer.isBuffer(file) || file.length === 0) return again('Choose a CSV file to upload')
      const name = (names.get(req) ?? 'upload.csv').slice(0, 255) || 'upload.csv'
      const r = await uploadJob(upload, {
        service, template, keyType: 'normal', apiKeyId: null, csv: file, name, createdBy: `user ${req.user!.id}`,
      })
      if ('limit' in r) return render(reply.code(429), 'job-upload', { service, template, placeholders: placeholders(template.body), error: 'Too many uploads just now: wait a minute and try again', errorField: 'file' })
      return reply.redirect(`/services/${service.id}/jobs/${r.id}/check`)
    })
  })

  scope.get<P>('/services/:sid/upload/:tid', async (req, reply) => {
    const service = await serviceFor(db, req.user!, req.params.sid, 'send_messages')
    const template = await templateFor(dir, service, req.params.tid)
    return render(reply, 'job-upload', { service, template, placeholders: placeholders(template.body) })
  })

  scope.get<P>('/services/:sid/jobs/:jid/check', async (req, reply) => {
    const service = await serviceFor(db, req.user!, req.params.sid, 'send_messages')
    const job = await jobOf(service, req.params.jid)
    if (job.status !== 'uploaded') return reply.redirect(`/services/${service.id}/jobs/${job.id}`)
    return render(reply, 'job-check', checkPage(req, service, job))
  })

  scope.post<P>('/services/:sid/jobs/:jid/start', async (req, reply) => {
    const service = await serviceFor(db, req.user!, req.params.sid, 'send_messages')
    const job = await jobOf(service, req.params.jid)
    const when = field(req.body, 'when')
    const at = when === 'now' ? null : new Date(when)
    const again = (error: string) => render(reply.code(400), 'job-check', checkPage(req, service, job, { error, errorField: 'when', chosen: when }))
    if (at && Number.isNaN(at.getTime())) return again('Choose when to send these messages: now, or one of the times listed')
    try {
      await startJob(db, service, job.id, at)
    } catch (err) {
      if (err instanceof JobStateError) return again(err.message)
      throw err
    }
    return reply.redirect(`/services/${service.id}/jobs/${job.id}`)
  })

  scope.post<P>('/services/:sid/jobs/:jid/cancel', async (req, reply) => {
    const service = await serviceFor(db, req.user!, req.params.sid, 'send_messages')
    const job = await jobOf(service, req.params.jid)
    if (!(await cancelJob(db, service.id, job.id))) {
      return render(reply.code(400), 'job', { ...(await jobPage(req, service, job)), error: `This job is ${job.status}: it cannot be cancelled` })
    }
    // An upload cancelled on its check page goes back to choosing a file; a job, to its page.
    return reply.redirect(job.status === 'uploaded' ? `/services/${service.id}/upload/${job.template_id}` : `/services/${service.id}/jobs/${job.id}`)
  })

  scope.get<P>('/services/:sid/jobs', async (req, reply) => {
    const service = await serviceFor(db, req.user!, req.params.sid, 'view_activity')
    return render(reply, 'job-list', { service, jobs: await listJobs(db, service.id, 100), when: timeIn(service) })
  })

  scope.get<P>('/services/:sid/jobs/:jid', async (req, reply) => {
    const service = await serviceFor(db, req.user!, req.params.sid, 'view_activity')
    const job = await jobOf(service, req.params.jid)
    if (job.status === 'uploaded') return reply.redirect(`/services/${service.id}/jobs/${job.id}/check`)
    return render(reply, 'job', await jobPage(req, service, job))
  })

  scope.get<P>('/services/:sid/jobs/:jid/report.csv', async (req, reply) => {
    const service = await serviceFor(db, req.user!, req.params.sid, 'view_activity')
    const job = await jobOf(service, req.params.jid)
    return sendCsv(reply, reportCsv(db, sealer, { serviceId: service.id, jobId: job.id }), `job-${job.id}.csv`)
  })

  async function jobPage(req: FastifyRequest, service: Service, job: JobDetail) {
    const count = (ss: string[]) => job.statistics.filter((s) => ss.includes(s.status)).reduce((n, s) => n + s.count, 0)
    const counts = { sending: count(SENDING), delivered: count(DELIVERED), failed: count(FAILED), cancelled: count(['cancelled']) }
    const live = ['scheduled', 'pending', 'in progress'].includes(job.status) || (job.status === 'finished' && counts.sending > 0)
    return { service, job, counts, live, when: timeIn(service), canSend: canService(req.user!, service.id, 'send_messages') }
  }
}
