/**
 * The CommCare HQ sandbox: a loopback HTTP server that speaks CommCare's wire format (ApiKey auth, the
 * county list fixture, the case API, the XForm receiver) over an in-memory store, with knobs for the
 * bad days of a real server: latency, 500s and 429 bursts. Admin routes under /sandbox/ play the
 * investigators (edits, transfers, duplicates). Routes are listed in README.md.
 */
import Fastify, { type FastifyInstance } from 'fastify'
import { readFileSync } from 'node:fs'
import { mulberry32 } from '../random.ts'
import { adminRoutes } from './admin.ts'
import { Forwarder, type ForwardTarget } from './forward.ts'
import { CaseStore, SandboxError, caseJson, parseMicros, type CaseListFilter, type SandboxCase } from './store.ts'
import { FormRejected, applyForm, parseForm } from './xform.ts'

export type { SandboxCase } from './store.ts'

export interface RateLimit { every: number; burst: number; retryAfterSeconds: number }

export interface CommCareSandboxOptions {
  port?: number
  user: string
  apiKey: string
  rootDomain: string
  countyList?: unknown
  latencyMs?: number
  failureRate?: number
  rateLimit?: RateLimit
  seed?: number
  forwardTo?: ForwardTarget
}

export interface CommCareSandbox {
  readonly url: string
  knobs: { latencyMs: number; failureRate: number; rateLimit?: RateLimit }
  readonly stats: { requests: number; submissions: number; rejected: number; status429: number; status5xx: number; inFlight: number; maxInFlight: number }
  cases(domain?: string): SandboxCase[]
  getCase(domain: string, caseId: string): SandboxCase | undefined
  edit(domain: string, caseId: string, properties: Record<string, string>, opts?: { closed?: boolean }): SandboxCase
  transfer(domain: string, caseId: string, toFips: number, opts?: { createDestination?: boolean; linkSource?: boolean }): SandboxCase | undefined
  markDuplicate(domain: string, caseId: string, ofCaseId: string): void
  /** The case API leaves `closed` out of this case's JSON. */
  omitClosed(domain: string, caseId: string, omit?: boolean): void
  /** Deletes a case and the cases indexed to it: the case API answers 404 for them. */
  deleteCase(domain: string, caseId: string): void
  /** `opts.modifiedAt` backdates the case's server_date_modified (the server clock is real time). */
  createCase(domain: string, properties: Record<string, string>, labResults?: Record<string, string>[], opts?: { modifiedAt?: string }): SandboxCase
  close(): Promise<void>
}

const MAX_LIMIT = 5000
const SUCCESS = '   √   '

export async function startCommCareSandbox(opts: CommCareSandboxOptions): Promise<CommCareSandbox> {
  const countyList = opts.countyList ?? JSON.parse(readFileSync(new URL('./county_list_ny.json', import.meta.url), 'utf8'))
  const forwarder = opts.forwardTo ? new Forwarder(opts.forwardTo) : undefined
  const store = new CaseStore(countyLookup(countyList), (c) => forwarder?.send(c))
  const app = Fastify({ logger: false, forceCloseConnections: true, bodyLimit: 16 * 1024 * 1024, routerOptions: { ignoreTrailingSlash: true, maxParamLength: 500 } })
  const stats = { requests: 0, submissions: 0, rejected: 0, status429: 0, status5xx: 0, inFlight: 0, maxInFlight: 0 }
  const sandbox: CommCareSandbox = {
    url: '',
    knobs: { latencyMs: opts.latencyMs ?? 0, failureRate: opts.failureRate ?? 0, rateLimit: opts.rateLimit },
    stats,
    cases: (domain) => structuredClone(store.all(domain)),
    getCase: (domain, caseId) => structuredClone(store.get(domain, caseId)),
    edit: (domain, caseId, properties, o) => store.edit(domain, caseId, properties, o),
    transfer: (domain, caseId, toFips, o) => store.transfer(domain, caseId, toFips, o),
    markDuplicate: (domain, caseId, ofCaseId) => void store.markDuplicate(domain, caseId, ofCaseId),
    omitClosed: (domain, caseId, omit) => store.omitClosed(domain, caseId, omit),
    deleteCase: (domain, caseId) => store.delete(domain, caseId),
    createCase: (domain, properties, labResults, o) => store.create(domain, properties, labResults, o),
    close: async () => {
      forwarder?.close()
      await app.close()
    },
  }
  for (const type of [/^text\//, 'application/xml']) {
    app.addContentTypeParser(type, { parseAs: 'string' }, (_req, body, done) => done(null, body))
  }
  app.setErrorHandler((err, _req, reply) => {
    if (err instanceof SandboxError) return reply.code(err.status).send({ error: err.message })
    return reply.send(err)
  })
  knobs(app, sandbox, opts)
  commcareRoutes(app, store, opts.rootDomain, countyList, stats)
  adminRoutes(app, sandbox, store)
  await app.listen({ port: opts.port ?? 0, host: '127.0.0.1' })
  const address = app.server.address()
  const port = typeof address === 'object' && address ? address.port : opts.port
  return Object.assign(sandbox, { url: `http://127.0.0.1:${port}` })
}

/** Auth, then the rate-limit burst, then injected failures, all before any work; latency after it. */
function knobs(app: FastifyInstance, sandbox: CommCareSandbox, opts: CommCareSandboxOptions): void {
  const stats = sandbox.stats as { -readonly [K in keyof CommCareSandbox['stats']]: number }
  const expected = `ApiKey ${opts.user}:${opts.apiKey}`
  const random = opts.seed === undefined ? Math.random : mulberry32(opts.seed)
  let counted = 0 // authenticated requests, for the rate-limit cycle
  const isApi = (url: string) => url.startsWith('/a/')
  app.addHook('onRequest', async (req, reply) => {
    if (!isApi(req.url)) return
    stats.requests++
    // API requests answered at once (a client's concurrency, seen from here), and the most there were.
    stats.maxInFlight = Math.max(stats.maxInFlight, ++stats.inFlight)
    if (req.headers.authorization !== expected) return reply.code(401).send({ error: 'Authorization: ApiKey <user>:<key> required' })
    const rl = sandbox.knobs.rateLimit
    if (rl && rl.burst > 0 && counted++ % (rl.every + rl.burst) >= rl.every) {
      return reply.code(429).header('retry-after', String(rl.retryAfterSeconds)).type('text/plain')
        .send(`Rate limited, retry after ${rl.retryAfterSeconds} seconds`)
    }
    if (sandbox.knobs.failureRate > 0 && random() < sandbox.knobs.failureRate) {
      return reply.code(500).type('text/plain').send('Internal Server Error (injected by the sandbox)')
    }
  })
  app.addHook('onSend', async (req, _reply, payload) => {
    if (isApi(req.url) && sandbox.knobs.latencyMs > 0) await new Promise((r) => setTimeout(r, sandbox.knobs.latencyMs))
    return payload
  })
  app.addHook('onResponse', async (req, reply) => {
    if (!isApi(req.url)) return
    stats.inFlight--
    if (reply.statusCode === 429) stats.status429++
    if (reply.statusCode >= 500) stats.status5xx++
  })
}

type Query = Record<string, string | string[] | undefined>
const first = (v: string | string[] | undefined) => (Array.isArray(v) ? v[0] : v)

function commcareRoutes(app: FastifyInstance, store: CaseStore, rootDomain: string, countyList: unknown, stats: { submissions: number; rejected: number }): void {
  app.get<{ Params: { domain: string }; Querystring: Query }>('/a/:domain/api/v0.5/fixture/', async (req, reply) => {
    if (req.params.domain !== rootDomain) return reply.code(404).send({ error: `no fixtures in domain ${req.params.domain}` })
    if (first(req.query.fixture_type) === 'county_list') return countyList
    return { meta: { limit: 1000, next: null, offset: 0, previous: null, total_count: 0 }, objects: [] }
  })

  app.get<{ Params: { domain: string; caseId: string }; Querystring: Query }>('/a/:domain/api/v0.5/case/:caseId/', async (req, reply) => {
    const c = store.get(req.params.domain, req.params.caseId)
    if (!c) return reply.code(404).send({ error: `case ${req.params.caseId} not found in domain ${req.params.domain}` })
    return caseJson(c, first(req.query.child_cases__full) === 'true' ? store.children(c) : undefined)
  })

  app.get<{ Params: { domain: string }; Querystring: Query }>('/a/:domain/api/v0.5/case/', async (req, reply) => {
    const q = (k: string) => first(req.query[k])
    let page: { filter: CaseListFilter; limit: number; offset: number }
    try {
      page = listQuery(req.params.domain, q)
    } catch (e) {
      return reply.code(400).send({ error: (e as Error).message })
    }
    const { limit, offset } = page
    const all = store.list(page.filter)
    const full = q('child_cases__full') === 'true'
    const link = (to: number) => {
      const p = new URLSearchParams(req.url.split('?')[1] ?? '')
      p.delete('limit')
      p.delete('offset')
      p.append('limit', String(limit))
      p.append('offset', String(to))
      return '?' + p.toString()
    }
    return {
      meta: {
        limit,
        next: offset + limit < all.length ? link(offset + limit) : null,
        offset,
        previous: offset > 0 ? link(Math.max(0, offset - limit)) : null,
        total_count: all.length,
      },
      objects: all.slice(offset, offset + limit).map((c) => caseJson(c, full ? store.children(c) : undefined)),
    }
  })

  app.post<{ Params: { domain: string } }>('/a/:domain/receiver/', async (req, reply) => {
    reply.type('text/xml; charset=utf-8')
    try {
      if (typeof req.body !== 'string') throw new FormRejected('expected an XForm with Content-Type text/xml')
      applyForm(store, req.params.domain, parseForm(req.body))
    } catch (e) {
      if (!(e instanceof FormRejected)) throw e
      stats.rejected++
      return reply.code(400).send(openRosa('processing_failure', e.message))
    }
    stats.submissions++
    return reply.code(201).send(openRosa('submit_success', SUCCESS))
  })
}

function listQuery(domain: string, q: (k: string) => string | undefined): { filter: CaseListFilter; limit: number; offset: number } {
  const int = (k: string, dflt: number) => {
    const v = q(k)
    if (v === undefined || v === '') return dflt
    if (!/^\d+$/.test(v)) throw new Error(`${k} must be a whole number`)
    return Number(v)
  }
  const time = (k: string) => {
    const v = q(k)
    if (v === undefined) return undefined
    const us = parseMicros(v)
    if (us === undefined) throw new Error(`${k} must be an ISO 8601 date or time`)
    return us
  }
  const closed = q('closed')?.toLowerCase()
  if (closed !== undefined && closed !== 'true' && closed !== 'false') throw new Error('closed must be true or false')
  const limit = int('limit', 20)
  return {
    // limit=0 means "as many as allowed", as in Tastypie, which CommCare's API is built on.
    limit: limit === 0 ? MAX_LIMIT : Math.min(limit, MAX_LIMIT),
    offset: int('offset', 0),
    filter: {
      domain, type: q('type'), externalId: q('external_id'), ownerId: q('owner_id'),
      closed: closed === undefined ? undefined : closed === 'true',
      modifiedStart: time('server_date_modified_start'), modifiedEnd: time('server_date_modified_end'),
    },
  }
}

function openRosa(nature: string, message: string): string {
  const text = message.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;')
  return `<OpenRosaResponse xmlns="http://openrosa.org/http/response"><message nature="${nature}">${text}</message></OpenRosaResponse>`
}

/** A county's domain and owning location by FIPS, from the county list fixture (a list with `objects`, or a bare array). */
function countyLookup(countyList: unknown): (fips: number) => { domain: string; ownerId?: string } | undefined {
  type Entry = { fields?: Record<string, unknown> }
  const objects: Entry[] = Array.isArray(countyList) ? countyList : (countyList as { objects?: Entry[] })?.objects ?? []
  return (fips) => {
    const f = objects.find((o) => Number(o.fields?.fips) === fips)?.fields
    if (!f || typeof f.domain !== 'string' || !f.domain) return undefined
    return { domain: f.domain, ownerId: typeof f.location_id === 'string' && f.location_id ? f.location_id : undefined }
  }
}

