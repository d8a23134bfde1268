/**
 * Admin routes for demos, without auth and outside CommCare's API: they play the investigators who work
 * cases in CommCare (edits, transfers, duplicates) and show what the sandbox holds. The knobs do not
 * apply here: a demo's own clicks should not be rate limited.
 */
import type { FastifyInstance } from 'fastify'
import type { CommCareSandbox } from './server.ts'
import { SandboxError, caseJson, type CaseStore } from './store.ts'

type Params = { domain: string; caseId: string }
type Body = Record<string, unknown> | undefined

function strings(v: unknown, what: string): Record<string, string> {
  if (v === undefined) return {}
  if (!v || typeof v !== 'object' || Object.values(v).some((x) => typeof x !== 'string')) {
    throw new SandboxError(`${what} must be an object of strings`, 400)
  }
  return v as Record<string, string>
}

export function adminRoutes(app: FastifyInstance, sandbox: CommCareSandbox, store: CaseStore): void {
  app.post<{ Params: { domain: string }; Body: Body }>('/sandbox/:domain/cases', async (req) => {
    const labs = req.body?.lab_results ?? []
    if (!Array.isArray(labs)) throw new SandboxError('lab_results must be a list', 400)
    const c = sandbox.createCase(req.params.domain, strings(req.body?.properties, 'properties'), labs.map((l) => strings(l, 'lab_results[]')))
    return caseJson(c)
  })

  app.post<{ Params: Params; Body: Body }>('/sandbox/:domain/cases/:caseId', async (req) => {
    const closed = req.body?.closed
    if (closed !== undefined && typeof closed !== 'boolean') throw new SandboxError('closed must be true or false', 400)
    return caseJson(sandbox.edit(req.params.domain, req.params.caseId, strings(req.body?.properties, 'properties'), { closed }))
  })

  app.post<{ Params: Params; Body: Body }>('/sandbox/:domain/cases/:caseId/transfer', async (req) => {
    const toFips = Number(req.body?.to_fips)
    if (!Number.isInteger(toFips)) throw new SandboxError('to_fips must be a county FIPS number', 400)
    const createDestination = req.body?.create_destination !== false
    const linkSource = req.body?.link_source !== false
    const destination = sandbox.transfer(req.params.domain, req.params.caseId, toFips, { createDestination, linkSource })
    return { origin: caseJson(store.get(req.params.domain, req.params.caseId)!), destination: destination ? caseJson(destination) : null }
  })

  app.post<{ Params: Params; Body: Body }>('/sandbox/:domain/cases/:caseId/duplicate', async (req) => {
    if (typeof req.body?.of !== 'string' || !req.body.of) throw new SandboxError('of must be a case id', 400)
    sandbox.markDuplicate(req.params.domain, req.params.caseId, req.body.of)
    return caseJson(store.get(req.params.domain, req.params.caseId)!)
  })

  app.post<{ Params: Params; Body: Body }>('/sandbox/:domain/cases/:caseId/shape', async (req) => {
    const omit = req.body?.omit_closed
    if (typeof omit !== 'boolean') throw new SandboxError('omit_closed must be true or false', 400)
    sandbox.omitClosed(req.params.domain, req.params.caseId, omit)
    return caseJson(store.get(req.params.domain, req.params.caseId)!)
  })

  app.delete<{ Params: Params }>('/sandbox/:domain/cases/:caseId', async (req) => {
    sandbox.deleteCase(req.params.domain, req.params.caseId)
    return { deleted: req.params.caseId }
  })

  app.get<{ Querystring: { domain?: string } }>('/sandbox/cases', async (req) => {
    return sandbox.cases(req.query.domain || undefined).map((c) => caseJson(c))
  })

  app.get('/sandbox/stats', async () => sandbox.stats)

  // Turn the knobs of a running sandbox from a demo script: any of latencyMs, failureRate, rateLimit (null removes it).
  app.post<{ Body: Body }>('/sandbox/knobs', async (req) => {
    const b = req.body ?? {}
    if (b.latencyMs !== undefined) sandbox.knobs.latencyMs = Math.max(0, Number(b.latencyMs) || 0)
    if (b.failureRate !== undefined) sandbox.knobs.failureRate = Math.min(1, Math.max(0, Number(b.failureRate) || 0))
    if (b.rateLimit !== undefined) sandbox.knobs.rateLimit = (b.rateLimit ?? undefined) as CommCareSandbox['knobs']['rateLimit']
    return sandbox.knobs
  })
}
