/**
 * The SMS provider sandbox: a loopback server that speaks one real provider's API, Twilio's
 * Programmable Messaging or Vonage's SMS API (`provider`), so Herald's real adapters are what tests
 * and demos exercise; run two to have two providers. It texts no one: an accepted text goes to the
 * ledger, and its delivery receipts are posted to the callback URL it named, in the provider's own
 * format, after `callbackDelayMs`. The recipient's last four digits choose a text's fate
 * (outcomes.ts); knobs inject rate limits and server errors. Routes, ranges and knobs: README.md.
 */
import Fastify, { type FastifyInstance } from 'fastify'
import { randomBytes } from 'node:crypto'
import { mulberry32 } from '../random.ts'
import { ALL_DELIVERED, MIX_KEYS, drawOutcome, fateByNumber, mixCanFail, type Fate, type Outcome, type OutcomeMix } from './outcomes.ts'
import { inboundRoutes, type InboundEntry } from './inbound.ts'
import { Receipts, type Step } from './receipts.ts'
import { twilioRoutes } from './twilio.ts'
import { vonageRoutes } from './vonage.ts'

export type { Outcome, OutcomeMix } from './outcomes.ts'
export { twilioSignature } from './twilio.ts'

export interface SmsSandboxOptions {
  provider: 'twilio' | 'vonage'
  port?: number
  /** Twilio's credentials (HTTP Basic); required when provider is 'twilio'. */
  accountSid?: string
  authToken?: string
  /** Vonage's credentials (api_key, api_secret); required when provider is 'vonage'. */
  apiKey?: string
  apiSecret?: string
  latencyMs?: number
  callbackDelayMs?: number
  /** Replaces the whole mix: a weight left out is 0. Default: all delivered. */
  outcomes?: Partial<OutcomeMix>
  failureRate?: number
  rateLimitRate?: number
  seed?: number
  /** The sandbox clock in ms, for the dates in answers and receipts. */
  now?: () => number
  /** Where `POST /sandbox/inbound` posts a resident's reply (the provider's inbound webhook, as its dashboard sets it): inbound.ts. */
  inboundUrl?: string
}

export interface SmsKnobs {
  latencyMs: number; callbackDelayMs: number; outcomes: OutcomeMix; failureRate: number; rateLimitRate: number
  /** Seeds the draws (and, from the start only, the ids); changing it starts the draws over. Absent: unseeded. */
  seed?: number
}

export interface SmsStats {
  /** Every request to the provider's API, refused ones too (admin routes not counted). */
  requests: number
  accepted: number
  /** Refused create (and fetch) calls, by kind: auth, missing_to, invalid_to, unroutable, ... */
  refused: Record<string, number>
  /** Injected rate limits: Twilio's HTTP 429, Vonage's status "1". */
  status429: number
  /** Injected server errors: Twilio's HTTP 500, Vonage's status "5". */
  status5xx: number
  callbacksSent: number
  callbacksFailed: number
}

export interface SmsLedgerEntry {
  /** Twilio's sid, or Vonage's message-id of the first part. */
  id: string
  /** Every part's id (Vonage gives each part its own); Twilio's is just the sid. */
  partIds: string[]
  to: string
  from: string
  body: string
  parts: number
  outcome: Outcome
  /** In the provider's words: queued/accepted, sent, delivered, ... (Twilio); accepted, delivered, expired, failed (Vonage). */
  status: string
  at: number
}

export interface SmsSandbox {
  readonly url: string
  readonly provider: 'twilio' | 'vonage'
  knobs: SmsKnobs
  readonly stats: SmsStats
  readonly ledger: SmsLedgerEntry[]
  /** Residents' replies posted by `POST /sandbox/inbound`, with the receiver's HTTP status. */
  readonly inbound: InboundEntry[]
  /** Where replies go (the option; may be changed on a running sandbox). */
  inboundUrl?: string
  sentPerRecipient(): Map<string, number>
  close(): Promise<void>
}

/** What a provider's routes need: the knobs' draws, ids, refusals, and the ledger with its receipts. */
export interface SmsCore {
  readonly knobs: SmsKnobs
  readonly stats: SmsStats
  now(): number
  /** One draw per create call while either rate is above 0: an injected failure, counted, or undefined. */
  injected(): 'rateLimit' | 'serverError' | undefined
  /** The number's fate by its last four digits, else one draw from the outcome mix. */
  fate(to: string): Fate
  /** `n` random hex digits (seeded when the sandbox is). */
  hex(n: number): string
  refuse(kind: string): void
  /** Records an accepted text and plays its receipt steps. */
  accept(entry: SmsLedgerEntry, steps: Step[]): void
}

/** The parts of the sandbox a provider module contributes. */
export interface ProviderApi {
  /** The path prefix of its API: requests, latency and the error handler apply there. */
  prefix: string
  /** The answer to an unexpected error, in the provider's format. */
  internalError(): { status: number; body: unknown }
}

export async function startSmsSandbox(opts: SmsSandboxOptions): Promise<SmsSandbox> {
  const now = opts.now ?? Date.now
  const app = Fastify({ logger: false, forceCloseConnections: true, routerOptions: { maxParamLength: 500 } })
  const knobs: SmsKnobs = {
    latencyMs: opts.latencyMs ?? 0, callbackDelayMs: opts.callbackDelayMs ?? 0, outcomes: mixOf(opts.outcomes),
    failureRate: opts.failureRate ?? 0, rateLimitRate: opts.rateLimitRate ?? 0, seed: opts.seed,
  }
  const stats: SmsStats = { requests: 0, accepted: 0, refused: {}, status429: 0, status5xx: 0, callbacksSent: 0, callbacksFailed: 0 }
  const ledger: SmsLedgerEntry[] = []
  const receipts = new Receipts(() => knobs.callbackDelayMs, now, stats)
  const drawn = draws(knobs)
  const core: SmsCore = {
    knobs, stats, now, fate: drawn.fate, hex: drawn.hex,
    injected() {
      const i = drawn.injected()
      if (i === 'rateLimit') stats.status429++
      if (i === 'serverError') stats.status5xx++
      return i
    },
    refuse: (kind) => void (stats.refused[kind] = (stats.refused[kind] ?? 0) + 1),
    accept(entry, steps) {
      ledger.push(entry)
      stats.accepted++
      receipts.play(entry, steps)
    },
  }
  const sandbox: SmsSandbox = {
    url: '', provider: opts.provider, knobs, stats, ledger, inbound: [], inboundUrl: opts.inboundUrl,
    sentPerRecipient() {
      const m = new Map<string, number>()
      for (const e of ledger) m.set(e.to, (m.get(e.to) ?? 0) + 1)
      return m
    },
    async close() {
      receipts.close()
      await app.close()
    },
  }
  bodyParsers(app)
  const api = opts.provider === 'twilio'
    ? twilioRoutes(app, core, { accountSid: required(opts, 'accountSid'), authToken: required(opts, 'authToken') })
    : vonageRoutes(app, core, { apiKey: required(opts, 'apiKey'), apiSecret: required(opts, 'apiSecret') })
  hooks(app, sandbox, api)
  adminRoutes(app, sandbox)
  inboundRoutes(app, { provider: opts.provider, inboundUrl: () => sandbox.inboundUrl, record: (e) => sandbox.inbound.push(e), hex: core.hex, now,
    accountSid: opts.accountSid, authToken: opts.authToken, apiKey: opts.apiKey })
  await app.listen({ port: opts.port ?? 0, host: '127.0.0.1' })
  const address = app.server.address()
  return Object.assign(sandbox, { url: `http://127.0.0.1:${typeof address === 'object' && address ? address.port : opts.port}` })
}

function required(opts: SmsSandboxOptions, key: 'accountSid' | 'authToken' | 'apiKey' | 'apiSecret'): string {
  const v = opts[key]
  if (!v) throw new Error(`startSmsSandbox: ${key} is required for provider ${opts.provider}`)
  return v
}

const mixOf = (m: Partial<OutcomeMix> | undefined): OutcomeMix =>
  m ? { delivered: m.delivered ?? 0, temporaryFailure: m.temporaryFailure ?? 0, permanentFailure: m.permanentFailure ?? 0 } : { ...ALL_DELIVERED }

/**
 * Separate generators, so turning one knob never moves another's sequence: injected failures,
 * outcomes, ids. A draw is spent only when it can matter (no failure draw while both rates are 0, no
 * outcome draw while the mix cannot fail). A new seed knob starts the first two over; ids keep the
 * sequence of the seed the sandbox started with, so a re-seeded sandbox never repeats an id.
 */
function draws(knobs: SmsKnobs): Pick<SmsCore, 'injected' | 'fate' | 'hex'> {
  const idDraw = knobs.seed === undefined ? undefined : mulberry32(knobs.seed ^ 0x1d5)
  let seed: number | undefined
  let gen = { failure: Math.random, outcome: Math.random }
  const current = () => {
    if (knobs.seed !== seed) {
      seed = knobs.seed
      gen = seed === undefined ? { failure: Math.random, outcome: Math.random } : { failure: mulberry32(seed), outcome: mulberry32(seed ^ 0x0c0e) }
    }
    return gen
  }
  return {
    injected() {
      const { rateLimitRate, failureRate } = knobs
      if (rateLimitRate <= 0 && failureRate <= 0) return undefined
      const r = current().failure()
      if (r < rateLimitRate) return 'rateLimit'
      return r < rateLimitRate + failureRate ? 'serverError' : undefined
    },
    fate: (to) => fateByNumber(to) ?? (mixCanFail(knobs.outcomes) ? drawOutcome(knobs.outcomes, current().outcome()) : 'delivered'),
    hex: (n) => idDraw
      ? Array.from({ length: n }, () => Math.floor(idDraw() * 16).toString(16)).join('')
      : randomBytes(Math.ceil(n / 2)).toString('hex').slice(0, n),
  }
}

/**
 * Bodies the providers read: form-encoded (Twilio; Vonage) and JSON (Vonage; the admin routes).
 * Anything else, or JSON that does not parse, reaches a provider route as no fields at all, so the
 * provider refuses it in its own words (missing parameters) rather than Fastify's.
 */
function bodyParsers(app: FastifyInstance): void {
  app.removeAllContentTypeParsers()
  app.addContentTypeParser('application/x-www-form-urlencoded', { parseAs: 'string' }, (_req, body, done) =>
    done(null, Object.fromEntries(new URLSearchParams(body as string))))
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (req, body, done) => {
    try {
      done(null, JSON.parse(body as string))
    } catch (err) {
      if (req.url.startsWith('/sandbox/')) done(Object.assign(err as Error, { statusCode: 400 }))
      else done(null, {})
    }
  })
  app.addContentTypeParser('*', { parseAs: 'string' }, (_req, _body, done) => done(null, {}))
}

/** Requests counted, latency added after handling (a slow answer's text is already accepted), errors in the provider's shape. */
function hooks(app: FastifyInstance, sandbox: SmsSandbox, api: ProviderApi): void {
  const isApi = (url: string) => url.startsWith(api.prefix)
  app.addHook('onRequest', async (req) => {
    if (isApi(req.url)) sandbox.stats.requests++
  })
  app.addHook('onSend', async (req, _reply, payload) => {
    if (isApi(req.url) && sandbox.knobs.latencyMs > 0) await new Promise((r) => setTimeout(r, sandbox.knobs.latencyMs))
    return payload
  })
  app.setErrorHandler(async (err: { statusCode?: number; message: string }, req, reply) => {
    if (!isApi(req.url)) return reply.code(err.statusCode ?? 500).send({ error: err.message })
    const { status, body } = api.internalError()
    return reply.code(status).send(body)
  })
}

/** Outside the provider's API, without auth or knobs: what was texted and counted, and the knobs. */
function adminRoutes(app: FastifyInstance, sandbox: SmsSandbox): void {
  app.get('/sandbox/ledger', async () => sandbox.ledger)
  app.get('/sandbox/stats', async () => sandbox.stats)
  app.post<{ Body: unknown }>('/sandbox/knobs', async (req, reply) => {
    const changes = knobChanges(req.body)
    if (typeof changes === 'string') return reply.code(400).send({ error: changes })
    return Object.assign(sandbox.knobs, changes)
  })
}

/** The knobs a POST /sandbox/knobs body sets, all checked before any is turned; or what is wrong with it. */
function knobChanges(body: unknown): Partial<SmsKnobs> | string {
  const b = (typeof body === 'object' && body !== null ? body : {}) as Record<string, unknown>
  const changes: Partial<SmsKnobs> = {}
  const weight = (v: unknown) => typeof v === 'number' && v >= 0 && v < Infinity
  for (const [key, max] of [['latencyMs', Infinity], ['callbackDelayMs', Infinity], ['failureRate', 1], ['rateLimitRate', 1]] as const) {
    const v = b[key]
    if (v === undefined) continue
    if (typeof v !== 'number' || !(v >= 0 && v <= max) || v === Infinity) return `${key} must be a number from 0${max < Infinity ? ` to ${max}` : ''}`
    changes[key] = v
  }
  if (b.outcomes !== undefined) {
    const o = b.outcomes as Record<string, unknown>
    const ok = typeof o === 'object' && o !== null && Object.entries(o).every(([k, v]) => (MIX_KEYS as readonly string[]).includes(k) && weight(v))
    if (!ok) return `outcomes must be an object of weights from 0, of ${MIX_KEYS.join(', ')}`
    changes.outcomes = mixOf(o as Partial<OutcomeMix>)
  }
  if (b.seed !== undefined) {
    if (b.seed !== null && !Number.isInteger(b.seed)) return 'seed must be a whole number, or null to unseed'
    changes.seed = b.seed === null ? undefined : (b.seed as number)
  }
  return changes
}
