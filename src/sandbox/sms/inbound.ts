/**
 * A resident's reply, played by the sandbox: `POST /sandbox/inbound` {from, to, body, provider?, url?}
 * posts the provider's inbound-message webhook to the inbound URL (the sandbox's `inboundUrl`, as a
 * provider's dashboard sets it per number; or `url`), as the provider would:
 *   Twilio  form-encoded (MessageSid, SmsSid, AccountSid, From, To, Body, NumMedia, NumSegments,
 *           SmsStatus=received, ApiVersion), signed with X-Twilio-Signature (the auth token)
 *   Vonage  JSON {msisdn, to (no +), messageId, text, type, keyword, api-key, message-timestamp}
 * One try, 5 s at most; answers {id, provider, status} with the receiver's HTTP status, so a test
 * sees what Herald made of it. A sandbox speaks one provider: `provider`, if given, must be its own.
 */
import { randomUUID } from 'node:crypto'
import type { FastifyInstance } from 'fastify'
import { isHttpUrl } from './receipts.ts'
import { twilioSignature } from './twilio.ts'

export interface InboundEntry { id: string; from: string; to: string; body: string; url: string; status: number | null; at: number }

export interface InboundDeps {
  provider: 'twilio' | 'vonage'
  /** Where inbound texts go unless a request names a URL; changeable on a running sandbox. */
  inboundUrl(): string | undefined
  record(e: InboundEntry): void
  hex(n: number): string
  now(): number
  accountSid?: string
  authToken?: string
  apiKey?: string
}

const str = (v: unknown) => (typeof v === 'string' ? v : undefined)
const stamp = (ms: number) => new Date(ms).toISOString().slice(0, 19).replace('T', ' ')
const GSM = /^[\n\r !"#$%&'()*+,\-./0-9:;<=>?@A-Z_a-z£¥èéùìòÇØøÅåΔΦΓΛΩΠΨΣΘΞÆæßÉ¡ÄÖÑÜ§¿äöñüà^{}\\[~\]|€]*$/

export function inboundRoutes(app: FastifyInstance, deps: InboundDeps): void {
  app.post('/sandbox/inbound', async (req, reply) => {
    const b = (typeof req.body === 'object' && req.body !== null ? req.body : {}) as Record<string, unknown>
    const [from, to, body] = [str(b.from), str(b.to), str(b.body)]
    if (!from || !to || body === undefined) return reply.code(400).send({ error: 'from, to and body are required (strings)' })
    if (b.provider !== undefined && b.provider !== deps.provider) {
      return reply.code(400).send({ error: `this sandbox speaks ${deps.provider}: post to the ${String(b.provider)} sandbox` })
    }
    const url = str(b.url) ?? deps.inboundUrl()
    if (!url || !isHttpUrl(url)) return reply.code(400).send({ error: 'no inbound URL: start the sandbox with inboundUrl, or give url' })
    const post = deps.provider === 'twilio' ? twilio(deps, url, from, to, body) : vonage(deps, url, from, to, body)
    const entry: InboundEntry = { id: post.id, from, to, body, url, status: null, at: deps.now() }
    deps.record(entry)
    try {
      const res = await fetch(url, { method: 'POST', headers: post.headers, body: post.body, signal: AbortSignal.timeout(5000) })
      await res.arrayBuffer()
      entry.status = res.status
    } catch {
      return reply.code(502).send({ error: 'the inbound URL did not answer', id: post.id })
    }
    return { id: post.id, provider: deps.provider, status: entry.status }
  })
}

function twilio(deps: InboundDeps, url: string, from: string, to: string, body: string) {
  const sid = `SM${deps.hex(32)}`
  const segments = Math.max(1, Math.ceil([...body].length / (GSM.test(body) ? 153 : 67)))
  const params: Record<string, string> = {
    ToCountry: 'US', SmsMessageSid: sid, NumMedia: '0', SmsSid: sid, SmsStatus: 'received', Body: body, To: to,
    NumSegments: String(segments), MessageSid: sid, AccountSid: deps.accountSid ?? '', From: from, ApiVersion: '2010-04-01',
  }
  return {
    id: sid, body: new URLSearchParams(params).toString(),
    headers: {
      'content-type': 'application/x-www-form-urlencoded', 'user-agent': 'TwilioProxy/1.1',
      'x-twilio-signature': twilioSignature(deps.authToken ?? '', url, params), 'i-twilio-idempotency-token': randomUUID(),
    },
  }
}

function vonage(deps: InboundDeps, _url: string, from: string, to: string, body: string) {
  const id = deps.hex(16).toUpperCase()
  const digits = (n: string) => n.replace(/^\+/, '')
  const message = {
    msisdn: digits(from), to: digits(to), messageId: id, text: body, type: GSM.test(body) ? 'text' : 'unicode',
    keyword: (body.trim().split(/\s+/)[0] ?? '').toUpperCase(), 'api-key': deps.apiKey ?? '', 'message-timestamp': stamp(deps.now()),
  }
  return { id, body: JSON.stringify(message), headers: { 'content-type': 'application/json', 'user-agent': 'Vonage/MessagingHUB' } }
}
