/**
 * The Exposure Notifications Verification Server sandbox: a loopback HTTP server that speaks the admin
 * API (`/api/issue`, `/api/batch-issue`, X-API-Key auth) and, instead of texting, appends every code it
 * would have sent to a ledger. Knobs for the bad days of the real server: a per-minute quota with its
 * rate-limit headers and plain-text 429, injected per-item failures, latency. Routes are in README.md.
 */
import Fastify, { type FastifyInstance, type FastifyReply } from 'fastify'
import type { IncomingMessage } from 'node:http'
import { mulberry32 } from '../random.ts'
import { INJECTABLE, Issuer, isObject, padding, windowEnd, windowStart, type Answer, type Injectable, type LedgerEntry } from './issue.ts'

export type { LedgerEntry } from './issue.ts'

export interface VerificationSandboxOptions {
  port?: number
  apiKey: string
  latencyMs?: number
  quota?: { perMinute: number }
  failures?: Partial<Record<Injectable, number>>
  seed?: number
  now?: () => number
}

export interface VerificationSandbox {
  readonly url: string
  knobs: { latencyMs: number; failures: Record<string, number>; quota?: { perMinute: number } }
  readonly stats: {
    requests: number; items: number; issued: number; conflicts409: number; status429: number; itemErrors: Record<string, number>
    /** HTTP 429 answers per quota window, by the window's start (ISO): how often the quota was overrun. */
    status429ByWindow: Record<string, number>
  }
  readonly ledger: LedgerEntry[]
  textedPerPhone(): Map<string, number>
  close(): Promise<void>
}

const MAX_BATCH = 10

export async function startVerificationSandbox(opts: VerificationSandboxOptions): Promise<VerificationSandbox> {
  const now = opts.now ?? Date.now
  const stats = { requests: 0, items: 0, issued: 0, conflicts409: 0, status429: 0, itemErrors: {} as Record<string, number>, status429ByWindow: {} as Record<string, number> }
  const knobs: VerificationSandbox['knobs'] = {
    latencyMs: opts.latencyMs ?? 0,
    failures: Object.fromEntries(INJECTABLE.map((k) => [k, opts.failures?.[k] ?? 0])),
    quota: opts.quota,
  }
  const random = opts.seed === undefined ? Math.random : mulberry32(opts.seed)
  // Codes come from their own generator, so turning the failure knobs never changes which codes a seed makes.
  const codeRandom = opts.seed === undefined ? Math.random : mulberry32(opts.seed ^ 0x5eed)
  const issuer = new Issuer(knobs, stats, random, codeRandom)
  const app = Fastify({ logger: false, forceCloseConnections: true })
  const sandbox: VerificationSandbox = {
    url: '',
    knobs,
    stats,
    ledger: issuer.ledger,
    textedPerPhone: () => {
      const m = new Map<string, number>()
      for (const e of issuer.ledger) m.set(e.phone, (m.get(e.phone) ?? 0) + 1)
      return m
    },
    close: () => app.close(),
  }
  app.setErrorHandler((err: { statusCode?: number; message: string }, _req, reply) => {
    // Fastify's own refusals (bad JSON, wrong content type, body too large) answer in the server's shape.
    const status = err.statusCode && err.statusCode >= 400 && err.statusCode < 500 ? err.statusCode : 500
    return reply.code(status).send({ error: err.message, errorCode: status === 500 ? 'internal_server_error' : 'unparsable_request' })
  })
  hooks(app, sandbox, issuer, opts.apiKey, now)
  routes(app, issuer)
  adminRoutes(app, sandbox)
  await app.listen({ port: opts.port ?? 0, host: '127.0.0.1' })
  const address = app.server.address()
  const port = typeof address === 'object' && address ? address.port : opts.port
  return Object.assign(sandbox, { url: `http://127.0.0.1:${port}` })
}

// Each request is handled at one sandbox time, read once when it arrives, so its quota window,
// its codes' expiry and its rate-limit headers agree even when a test moves the clock meanwhile.
const arrivedAt = new WeakMap<IncomingMessage, number>()
const timeOf = (raw: IncomingMessage) => arrivedAt.get(raw) ?? 0

/** Auth, then the exhausted-quota 429, both before any work; rate-limit headers and latency on every answer. */
function hooks(app: FastifyInstance, sandbox: VerificationSandbox, issuer: Issuer, apiKey: string, now: () => number): void {
  const stats = sandbox.stats as { -readonly [K in keyof VerificationSandbox['stats']]: VerificationSandbox['stats'][K] }
  const isApi = (url: string) => url.startsWith('/api/')
  app.addHook('onRequest', async (req, reply) => {
    if (!isApi(req.url)) return
    stats.requests++
    const at = now()
    arrivedAt.set(req.raw, at)
    if (req.headers['x-api-key'] !== apiKey) return reply.code(401).send({ error: 'invalid API key', errorCode: 'unauthorized' })
    if (issuer.remaining(at) <= 0) {
      return reply.code(429).header('retry-after', String(Math.ceil((windowEnd(at) - at) / 1000)))
        .type('text/plain; charset=utf-8').send('Too Many Requests')
    }
  })
  app.addHook('onSend', async (req, reply, payload) => {
    if (!isApi(req.url)) return payload
    const quota = sandbox.knobs.quota
    if (quota) {
      const at = timeOf(req.raw)
      reply.header('x-ratelimit-limit', String(quota.perMinute))
        .header('x-ratelimit-remaining', String(issuer.remaining(at)))
        .header('x-ratelimit-reset', String(windowEnd(at) / 1000))
    }
    if (sandbox.knobs.latencyMs > 0) await new Promise((r) => setTimeout(r, sandbox.knobs.latencyMs))
    return payload
  })
  app.addHook('onResponse', async (req, reply) => {
    if (!isApi(req.url) || reply.statusCode !== 429) return
    stats.status429++
    const window = new Date(windowStart(timeOf(req.raw))).toISOString()
    stats.status429ByWindow[window] = (stats.status429ByWindow[window] ?? 0) + 1
  })
}

function routes(app: FastifyInstance, issuer: Issuer): void {
  app.post('/api/issue', async (req, reply) => {
    const answer = issuer.issue(req.body, timeOf(req.raw))
    return reply.code(answer.status).send(answer.body)
  })

  app.post('/api/batch-issue', async (req, reply) => {
    const codes = isObject(req.body) ? req.body.codes : undefined
    if (!Array.isArray(codes) || codes.length === 0) return refuse(reply, 'unparsable_request', 'codes must be a non-empty list of issue requests')
    if (codes.length > MAX_BATCH) return refuse(reply, 'batch_size_limit_exceeded', `batch size limit [${MAX_BATCH}] exceeded`)
    const at = timeOf(req.raw)
    // Not atomic, as in the real server: every item is attempted, and what succeeded stays texted.
    const answers: Answer[] = codes.map((item) => issuer.issue(item, at))
    const failed = answers.filter((a) => a.status !== 200)
    const first = failed[0]?.body
    const summary = first && 'errorCode' in first
      ? { error: `${failed.length} of ${answers.length} codes failed; the first: ${first.error}`, errorCode: first.errorCode }
      : {}
    return reply.code(failed[0]?.status ?? 200).send({ codes: answers.map((a) => a.body), ...summary, padding: padding() })
  })
}

const refuse = (reply: FastifyReply, errorCode: string, error: string) => reply.code(400).send({ error, errorCode })

/** Outside the real API, without auth or knobs: what the sandbox texted and counted, and its knobs. */
function adminRoutes(app: FastifyInstance, sandbox: VerificationSandbox): void {
  app.get('/sandbox/ledger', async () => sandbox.ledger)
  app.get('/sandbox/stats', async () => sandbox.stats)
  app.post<{ Body: Record<string, unknown> | undefined }>('/sandbox/knobs', async (req, reply) => {
    const b = isObject(req.body) ? req.body : {}
    if (b.latencyMs !== undefined) sandbox.knobs.latencyMs = Math.max(0, Number(b.latencyMs) || 0)
    if (b.failures !== undefined) {
      if (!isObject(b.failures)) return reply.code(400).send({ error: 'failures must be an object of probabilities' })
      for (const [k, v] of Object.entries(b.failures)) {
        if (!(INJECTABLE as readonly string[]).includes(k)) return reply.code(400).send({ error: `unknown failure ${k}; known: ${INJECTABLE.join(', ')}` })
        sandbox.knobs.failures[k] = Math.min(1, Math.max(0, Number(v) || 0))
      }
    }
    if (b.quota === null) sandbox.knobs.quota = undefined
    else if (b.quota !== undefined) {
      const perMinute = isObject(b.quota) ? Number(b.quota.perMinute) : NaN
      if (!Number.isInteger(perMinute) || perMinute < 0) return reply.code(400).send({ error: 'quota must be {perMinute: a whole number} or null' })
      sandbox.knobs.quota = { perMinute }
    }
    return sandbox.knobs
  })
}
