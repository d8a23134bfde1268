/**
 * Case sync by county (waiting, failed, the unresolved transfers with their chain and why, a form to
 * resolve each: `herald cases resolve`), a failed job tried again (`herald cases retry`), and
 * exposure's notices by state and reason with a retry by reason (`herald exposure retry`).
 */
import type { FastifyReply, FastifyRequest } from 'fastify'
import { skippedByReason } from '../../casesync/inbound.ts'
import { outboundQueue } from '../../casesync/queue.ts'
import { ResolveError, resolveCase } from '../../casesync/resolve-case.ts'
import { casesByCounty, failedCases, outboundSummary } from '../../casesync/status.ts'
import { retry } from '../../engine/queue.ts'
import { exposureStatus, retryNotices } from '../../exposure/status.ts'
import { httpError } from '../app.ts'
import { idOf, type PipelinePages } from './pipeline.ts'

type Form = Record<string, string | undefined>
/** The jobs an operator can answer in a form; a cycle is fixed in CommCare. */
const ANSWERABLE = new Set(['unresolved_transfer', 'missing_in_commcare'])
const count = (q: unknown, k: string) => {
  const v = (q as Record<string, string | undefined>)[k]
  return v !== undefined && /^\d{1,6}$/.test(v) ? Number(v) : undefined
}

export const casePages: PipelinePages = (p, { db, render, page }) => {
  const casesPage = async (req: FastifyRequest, reply: FastifyReply, extra: Record<string, unknown> = {}) => {
    const failed = await failedCases(db, 500)
    return render(reply, 'pipeline-cases', page.view(req, {
      summary: await outboundSummary(db), counties: await casesByCounty(db), skipped: await skippedByReason(db),
      answerable: failed.filter((f) => ANSWERABLE.has(f.kind ?? '')), others: failed.filter((f) => !ANSWERABLE.has(f.kind ?? '')),
      resolved: count(req.query, 'resolved'), retried: count(req.query, 'retried'), ...extra,
    }))
  }

  p.get('/pipeline/cases', async (req, reply) => casesPage(req, reply))

  p.post<{ Params: { id: string }; Body: Form }>('/pipeline/cases/:id/resolve', async (req, reply) => {
    page.mustOperate(req)
    const id = idOf(req.params.id, 'case')
    const to = req.body.to?.trim() || undefined
    const recreate = req.body.recreate === '1'
    const domain = recreate ? undefined : req.body.domain?.trim() || undefined
    try {
      await resolveCase(db, id, { to: recreate ? undefined : to, domain, recreate }, page.by(req))
    } catch (err) {
      if (!(err instanceof ResolveError)) throw err
      if (err.notFound) throw httpError(404, `There is no case ${id}`)
      // The command's words name its options: the form's fields are the same.
      const field = /--domain/.test(err.message) && !/--recreate/.test(err.message) ? 'domain' : 'to'
      return casesPage(req, reply.code(400), { formError: { id, field, message: err.message.replace(/--to CASE_ID|--to/g, 'the case id').replace(/--domain/g, 'domain') }, form: req.body })
    }
    return reply.redirect(`/pipeline/cases?resolved=${id}`)
  })

  p.post<{ Params: { id: string } }>('/pipeline/cases/:id/retry', async (req, reply) => {
    page.mustOperate(req)
    const id = idOf(req.params.id, 'case')
    const done = await retry(db, outboundQueue, [id], page.by(req))
    if (done.length === 0) throw httpError(404, `Case ${id} has no failed case sync job to try again`)
    return reply.redirect(`/pipeline/cases?retried=${done.length}`)
  })

  p.get('/pipeline/exposure', async (req, reply) => {
    const status = await exposureStatus(db)
    return render(reply, 'pipeline-exposure', page.view(req, exposureView(status, count(req.query, 'retried'))))
  })

  p.post<{ Body: Form }>('/pipeline/exposure/retry', async (req, reply) => {
    page.mustOperate(req)
    const reason = req.body.reason?.trim() ?? ''
    if (!reason || reason.length > 200) {
      const status = await exposureStatus(db)
      return render(reply.code(400), 'pipeline-exposure', page.view(req, { ...exposureView(status), error: 'Reason: choose the reason whose notices to try again' }))
    }
    const n = await retryNotices(db, reason, `${page.by(req)} (reason ${reason})`)
    return reply.redirect(`/pipeline/exposure?retried=${n}`)
  })
}

/** Notices by state (with the reasons inside each), and the reasons not sent, each with how many. */
function exposureView(status: Awaited<ReturnType<typeof exposureStatus>>, retried?: number) {
  const byState = new Map<string, number>()
  for (const r of status.notices) byState.set(r.state, (byState.get(r.state) ?? 0) + r.notices)
  const notSent = status.notices.filter((r) => r.state === 'not_sent')
  return { status, byState: [...byState], notSent, retried }
}
