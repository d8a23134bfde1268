/**
 * The Twilio Lookup v2 sandbox: a loopback HTTP server that answers
 * `GET /v2/PhoneNumbers/{number}?Fields=line_type_intelligence` in Twilio's format, with HTTP Basic auth.
 * A US number's last four digits choose its line type, or make it invalid, or make its first lookup fail
 * (the ranges are in README.md), so a test picks its outcome by picking a number. Knobs: latency and a
 * cap on requests in flight, beyond which Twilio's 429 (20429) answers.
 */
import Fastify, { type FastifyInstance } from 'fastify'
import { CARRIERS, nationalFormat, parseNumber, planFor } from './numbers.ts'

export interface LookupSandboxOptions {
  port?: number
  accountSid: string
  authToken: string
  latencyMs?: number
  maxConcurrent?: number
}

export interface LookupSandbox {
  readonly url: string
  knobs: { latencyMs: number; maxConcurrent?: number }
  readonly stats: { requests: number; status429: number; status5xx: number; byNumber: Map<string, number> }
  close(): Promise<void>
}

/** Twilio's error body: a numeric code, its message, and the page that explains it. */
const twilioError = (code: number, message: string, status: number) =>
  ({ code, message, more_info: `https://www.twilio.com/docs/errors/${code}`, status })

export async function startLookupSandbox(opts: LookupSandboxOptions): Promise<LookupSandbox> {
  const app = Fastify({ logger: false, forceCloseConnections: true, routerOptions: { maxParamLength: 500 } })
  const sandbox: LookupSandbox = {
    url: '',
    knobs: { latencyMs: opts.latencyMs ?? 0, maxConcurrent: opts.maxConcurrent },
    stats: { requests: 0, status429: 0, status5xx: 0, byNumber: new Map() },
    close: () => app.close(),
  }
  hooks(app, sandbox, opts)
  routes(app, sandbox)
  app.get('/sandbox/stats', async () => ({ ...sandbox.stats, byNumber: Object.fromEntries(sandbox.stats.byNumber) }))
  app.post<{ Body: Record<string, unknown> | undefined }>('/sandbox/knobs', async (req) => {
    const b = req.body ?? {}
    if (b.latencyMs !== undefined) sandbox.knobs.latencyMs = Math.max(0, Number(b.latencyMs) || 0)
    if (b.maxConcurrent !== undefined) sandbox.knobs.maxConcurrent = b.maxConcurrent === null ? undefined : Math.max(0, Number(b.maxConcurrent) || 0)
    return sandbox.knobs
  })
  app.setNotFoundHandler(async (req, reply) =>
    reply.code(404).send(twilioError(20404, `The requested resource ${req.url.split('?')[0]} was not found`, 404)))
  await app.listen({ port: opts.port ?? 0, host: '127.0.0.1' })
  const address = app.server.address()
  const port = typeof address === 'object' && address ? address.port : opts.port
  return Object.assign(sandbox, { url: `http://127.0.0.1:${port}` })
}

/** Auth, then the in-flight cap, both before any work; latency after it, on every answer. */
function hooks(app: FastifyInstance, sandbox: LookupSandbox, opts: LookupSandboxOptions): void {
  const stats = sandbox.stats as { -readonly [K in keyof LookupSandbox['stats']]: LookupSandbox['stats'][K] }
  const credentials = `${opts.accountSid}:${opts.authToken}`
  const isApi = (url: string) => url.startsWith('/v2/')
  let inFlight = 0
  app.addHook('onRequest', async (req, reply) => {
    if (!isApi(req.url)) return
    stats.requests++
    const basic = /^Basic\s+(\S+)$/i.exec(req.headers.authorization ?? '')
    if (!basic || Buffer.from(basic[1], 'base64').toString('utf8') !== credentials) {
      return reply.code(401).header('www-authenticate', 'Basic realm="Twilio API"').send(twilioError(20003, 'Authenticate', 401))
    }
    const max = sandbox.knobs.maxConcurrent
    if (max !== undefined && inFlight >= max) return reply.code(429).header('retry-after', '1').send(twilioError(20429, 'Too Many Requests', 429))
    // A request is in flight from its admission until its connection is done with it, latency included;
    // 'close' fires after the answer is sent and also when a client gives up early, so the count never leaks.
    inFlight++
    reply.raw.once('close', () => inFlight--)
  })
  app.addHook('onSend', async (req, _reply, payload) => {
    if (isApi(req.url) && sandbox.knobs.latencyMs > 0) await new Promise((r) => setTimeout(r, sandbox.knobs.latencyMs))
    return payload
  })
  app.addHook('onResponse', async (req, reply) => {
    if (!isApi(req.url)) return
    if (reply.statusCode === 429) stats.status429++
    if (reply.statusCode >= 500) stats.status5xx++
  })
}

function routes(app: FastifyInstance, sandbox: LookupSandbox): void {
  const looked = new Set<string>() // numbers looked up before: their planned first failure is spent
  app.get<{ Params: { number: string }; Querystring: { Fields?: string | string[] } }>('/v2/PhoneNumbers/:number', async (req, reply) => {
    const n = parseNumber(req.params.number)
    const byNumber = sandbox.stats.byNumber
    byNumber.set(n.phoneNumber, (byNumber.get(n.phoneNumber) ?? 0) + 1)
    const first = !looked.has(n.phoneNumber)
    looked.add(n.phoneNumber)
    const plan = n.error ? { invalid: true as const } : planFor(n)
    if ('firstFails' in plan && first) {
      if (plan.firstFails === 429) return reply.code(429).header('retry-after', '1').send(twilioError(20429, 'Too Many Requests', 429))
      return reply.code(500).send(twilioError(20500, 'Internal Server Error', 500))
    }
    const valid = !('invalid' in plan)
    const fields = [req.query.Fields ?? []].flat().flatMap((f) => f.split(',')).map((f) => f.trim())
    // As in Twilio, a data package answers only when asked for in Fields, and never for an invalid number.
    const line = 'line' in plan ? plan.line : 'mobile'
    const lineType = valid && fields.includes('line_type_intelligence') ? { type: line, ...CARRIERS[line], error_code: null } : null
    return {
      calling_country_code: n.callingCode,
      country_code: n.country,
      phone_number: n.phoneNumber,
      national_format: valid ? nationalFormat(n) : null,
      valid,
      validation_errors: valid ? [] : [n.error ?? 'INVALID_BUT_POSSIBLE'],
      caller_name: null,
      sim_swap: null,
      call_forwarding: null,
      line_type_intelligence: lineType,
      url: `${sandbox.url}/v2/PhoneNumbers/${n.phoneNumber}`,
    }
  })
}
