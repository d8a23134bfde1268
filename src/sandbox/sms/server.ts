/**
 * SMS provider sandbox: a loopback server speaking Twilio's Messaging API or Vonage's SMS API (one
 * of the two, `provider`), so Herald's real adapters are what tests and demos exercise. It "sends"
 * nothing: accepted texts go to a ledger, and delivery receipts are posted to the callback URL each
 * text named, in the provider's own format, after `callbackDelayMs`. Knobs: latency, outcome mix,
 * injected 5xx and rate limits. Run two (one each) to have two providers for failover.
 * Number patterns: outcomes.ts. Routes: README.md.
 */
import Fastify, { type FastifyInstance } from 'fastify'
import { mulberry32 } from '../verification/issue.ts'
import type { OutcomeMix } from './outcomes.ts'
import { twilioRoutes } from './twilio.ts'
import { vonageRoutes } from './vonage.ts'

export interface SmsSandboxOptions {
  provider: 'twilio' | 'vonage'
  port?: number
  /** Twilio's credentials (basic auth). */
  accountSid?: string
  authToken?: string
  /** Vonage's credentials (api_key, api_secret). */
  apiKey?: string
  apiSecret?: string
  latencyMs?: number
  callbackDelayMs?: number
  outcomes?: Partial<OutcomeMix>
  failureRate?: number
  rateLimitRate?: number
  seed?: number
}

export interface SmsLedgerEntry { id: string; to: string; from: string; body: string; parts: number; status: string; at: number }

export interface SmsSandbox {
  readonly url: string
  readonly provider: 'twilio' | 'vonage'
  knobs: { latencyMs: number; callbackDelayMs: number; outcomes: OutcomeMix; failureRate: number; rateLimitRate: number }
  readonly stats: { requests: number; accepted: number; refused: number; status429: number; status5xx: number; callbacksSent: number; callbacksFailed: number }
  readonly ledger: SmsLedgerEntry[]
  sentPerRecipient(): Map<string, number>
  close(): Promise<void>
}

/** What a provider's routes need from the sandbox: its knobs, the draw, and receipts to post later. */
export interface SandboxCore {
  sandbox: SmsSandbox
  draw: () => number
  /** Posts `send()` after the callback delay, tried up to 3 times; cancelled when the sandbox closes. */
  receipt(send: () => Promise<Response>): void
  /** Waits the latency knob (after the text was accepted: a slow answer's text is already on its way). */
  latency(): Promise<void>
}

export async function startSmsSandbox(opts: SmsSandboxOptions): Promise<SmsSandbox> {
  const app: FastifyInstance = Fastify({ logger: false, forceCloseConnections: true })
  const timers = new Set<NodeJS.Timeout>()
  let closed = false
  const sandbox: SmsSandbox = {
    url: '',
    provider: opts.provider,
    knobs: {
      latencyMs: opts.latencyMs ?? 0, callbackDelayMs: opts.callbackDelayMs ?? 0, failureRate: opts.failureRate ?? 0, rateLimitRate: opts.rateLimitRate ?? 0,
      outcomes: { delivered: 1, temporaryFailure: 0, permanentFailure: 0, ...opts.outcomes },
    },
    stats: { requests: 0, accepted: 0, refused: 0, status429: 0, status5xx: 0, callbacksSent: 0, callbacksFailed: 0 },
    ledger: [],
    sentPerRecipient() {
      const m = new Map<string, number>()
      for (const e of this.ledger) m.set(e.to, (m.get(e.to) ?? 0) + 1)
      return m
    },
    async close() {
      closed = true
      for (const t of timers) clearTimeout(t)
      await app.close()
    },
  }
  const later = (ms: number, fn: () => void) => {
    const t = setTimeout(() => {
      timers.delete(t)
      if (!closed) fn()
    }, ms)
    timers.add(t)
  }
  const core: SandboxCore = {
    sandbox,
    draw: opts.seed === undefined ? Math.random : mulberry32(opts.seed),
    receipt(send) {
      const attempt = (n: number) => later(n === 0 ? sandbox.knobs.callbackDelayMs : 200 * 2 ** n, () => {
        send().then((res) => {
          if (!res.ok) throw new Error(`HTTP ${res.status}`)
          sandbox.stats.callbacksSent++
        }).catch(() => {
          if (n < 2) attempt(n + 1)
          else sandbox.stats.callbacksFailed++
        })
      })
      attempt(0)
    },
    latency: () => new Promise((r) => (sandbox.knobs.latencyMs > 0 ? setTimeout(r, sandbox.knobs.latencyMs) : r(undefined))),
  }
  app.addContentTypeParser('application/x-www-form-urlencoded', { parseAs: 'string' }, (_req, body, done) => {
    done(null, Object.fromEntries(new URLSearchParams(body as string)))
  })
  app.addHook('onRequest', async (req) => {
    if (!req.url.startsWith('/sandbox/')) sandbox.stats.requests++
  })
  if (opts.provider === 'twilio') twilioRoutes(app, core, { accountSid: opts.accountSid ?? 'ACsandbox', authToken: opts.authToken ?? 'sandbox' })
  else vonageRoutes(app, core, { apiKey: opts.apiKey ?? 'sandbox', apiSecret: opts.apiSecret ?? 'sandbox' })
  app.get('/sandbox/ledger', async () => sandbox.ledger)
  app.get('/sandbox/stats', async () => sandbox.stats)
  app.post<{ Body: Partial<SmsSandbox['knobs']> | undefined }>('/sandbox/knobs', async (req) => {
    const b = req.body ?? {}
    for (const k of ['latencyMs', 'callbackDelayMs', 'failureRate', 'rateLimitRate'] as const) if (typeof b[k] === 'number') sandbox.knobs[k] = b[k]
    if (b.outcomes) sandbox.knobs.outcomes = { ...sandbox.knobs.outcomes, ...b.outcomes }
    return sandbox.knobs
  })
  await app.listen({ port: opts.port ?? 0, host: '127.0.0.1' })
  const address = app.server.address()
  return Object.assign(sandbox, { url: `http://127.0.0.1:${typeof address === 'object' && address ? address.port : opts.port}` })
}
