/**
 * Twilio Programmable Messaging as the sandbox speaks it: `POST /2010-04-01/Accounts/{AccountSid}/
 * Messages.json` (form-encoded, HTTP Basic auth) answers 201 with the Message resource, and `GET
 * .../Messages/{Sid}.json` shows it with its current status. Refusals are Twilio's JSON errors
 * `{code, message, more_info, status}`. Status callbacks are posted form-encoded to StatusCallback
 * (`sent`, then the final status with its ErrorCode), signed with X-Twilio-Signature.
 */
import { createHmac, randomUUID } from 'node:crypto'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { TWILIO } from './outcomes.ts'
import { isHttpUrl, type Post, type Step } from './receipts.ts'
import { encodingOf, split } from './segments.ts'
import type { ProviderApi, SmsCore } from './server.ts'

const API = '/2010-04-01'
const MAX_BODY = 1600
const E164 = /^\+[1-9]\d{7,14}$/
// A sender: E.164, a short code, or an alphanumeric sender ID (up to 11 letters, digits and spaces, one letter at least).
const SENDER = /^(\+[1-9]\d{7,14}|\d{5,6}|(?=.*[A-Za-z])[A-Za-z0-9 ]{1,11})$/
// The number Twilio would pick from a Messaging Service's pool: Twilio's own magic test number.
const SERVICE_SENDER = '+15005550006'
const PRICE_PER_SEGMENT = 0.0079

/**
 * Twilio's signature of a request it sends: base64 HMAC-SHA1, keyed with the auth token, of the full
 * URL (query string included) followed by each POST parameter's name and value, names sorted.
 */
export function twilioSignature(authToken: string, url: string, params: Record<string, string>): string {
  const data = url + Object.keys(params).sort().map((k) => k + params[k]).join('')
  return createHmac('sha1', authToken).update(data, 'utf8').digest('base64')
}

/** Twilio's error body: a numeric code, its message, and the page that explains it. */
const twilioError = (code: number, message: string, status: number) =>
  ({ code, message, more_info: `https://www.twilio.com/docs/errors/${code}`, status })

/** RFC 2822 in UTC, as Twilio writes dates: `Mon, 23 Nov 2026 12:00:00 +0000`. */
const rfc2822 = (ms: number) => new Date(ms).toUTCString().replace('GMT', '+0000')
/** YYMMDDhhmm in UTC, as the carrier's receipt dates it. */
const dlrDate = (ms: number) => new Date(ms).toISOString().slice(2, 16).replace(/[-T:]/g, '')

/** A message as GET shows it; receipts change it as they fire. */
interface Resource {
  sid: string; to: string; from: string | null; messaging_service_sid: string | null; body: string; status: string
  num_segments: string; date_created: string; date_updated: string; date_sent: string | null; price: string | null; error_code: number | null
}

export function twilioRoutes(app: FastifyInstance, core: SmsCore, creds: { accountSid: string; authToken: string }): ProviderApi {
  const credentials = `${creds.accountSid}:${creds.authToken}`
  const messages = new Map<string, Resource>()
  const uri = (sid: string) => `${API}/Accounts/${creds.accountSid}/Messages/${sid}.json`
  const show = (m: Resource) => ({
    ...m, account_sid: creds.accountSid, num_media: '0', direction: 'outbound-api', api_version: '2010-04-01', price_unit: 'USD',
    error_message: null, uri: uri(m.sid), subresource_uris: { media: `${API}/Accounts/${creds.accountSid}/Messages/${m.sid}/Media.json` },
  })
  const refuse = (reply: FastifyReply, kind: string, status: number, code: number, message: string) => {
    core.refuse(kind)
    return reply.code(status).send(twilioError(code, message, status))
  }
  const notFound = (reply: FastifyReply, path: string, kind?: string) => {
    if (kind) core.refuse(kind)
    return reply.code(404).send(twilioError(20404, `The requested resource ${path} was not found`, 404))
  }

  // Auth before anything else, on every API route.
  app.addHook('onRequest', async (req, reply) => {
    if (!req.url.startsWith(`${API}/`)) return
    const basic = /^Basic\s+(\S+)$/i.exec(req.headers.authorization ?? '')
    if (!basic || Buffer.from(basic[1], 'base64').toString('utf8') !== credentials) {
      core.refuse('auth')
      return reply.code(401).header('www-authenticate', 'Basic realm="Twilio API"').send(twilioError(20003, 'Authenticate', 401))
    }
  })

  app.post<{ Params: { account: string }; Body: Record<string, string> }>(`${API}/Accounts/:account/Messages.json`, async (req, reply) => {
    if (req.params.account !== creds.accountSid) return notFound(reply, req.url.split('?')[0], 'account')
    const injected = core.injected()
    if (injected === 'rateLimit') return reply.code(429).send(twilioError(20429, 'Too Many Requests', 429))
    if (injected === 'serverError') return reply.code(500).send(twilioError(20500, 'Internal Server Error', 500))
    // Twilio reads form fields only: a JSON body is a request without parameters.
    const p: Record<string, string | undefined> = isForm(req) ? req.body ?? {} : {}
    const { To: to, From: from, MessagingServiceSid: service, Body: body, StatusCallback: callback } = p
    if (!to) return refuse(reply, 'missing_to', 400, 21604, "A 'To' phone number is required.")
    if (!from && !service) return refuse(reply, 'missing_from', 400, 21603, "A 'From' phone number is required.")
    if (from && !SENDER.test(from)) return refuse(reply, 'invalid_from', 400, 21212, "The 'From' number is not a valid phone number, shortcode, or alphanumeric sender ID.")
    if (!body) return refuse(reply, 'missing_body', 400, 21602, 'Message body is required.')
    if (body.length > MAX_BODY) return refuse(reply, 'body_too_long', 400, 21617, `The concatenated message body exceeds the ${MAX_BODY} character limit.`)
    // Twilio's message names the number; the sandbox's does not, so a refusal never carries one into a log.
    if (!E164.test(to)) return refuse(reply, 'invalid_to', 400, 21211, "The 'To' number is not a valid phone number.")
    if (callback && !isHttpUrl(callback)) return refuse(reply, 'invalid_callback', 400, 21609, 'The StatusCallback URL is not a valid URL.')
    const fate = core.fate(to)
    if (fate === 'invalidNumber') return refuse(reply, 'unroutable', 400, 21211, "The 'To' number is not a valid phone number.")
    // A number that replied STOP to this sender: Twilio refuses the send itself.
    if (fate === 'optedOut') return refuse(reply, 'opted_out', 400, 21610, 'Attempt to send to unsubscribed recipient')

    const at = core.now()
    const sid = `SM${core.hex(32)}`
    const segments = split(body, encodingOf(body)).length
    const m: Resource = {
      sid, to, from: from ?? null, messaging_service_sid: service ?? null, body,
      // Through a Messaging Service without a From, Twilio has not yet picked a sender: `accepted`, from null.
      status: from ? 'queued' : 'accepted',
      num_segments: String(segments), date_created: rfc2822(at), date_updated: rfc2822(at), date_sent: null, price: null, error_code: null,
    }
    messages.set(sid, m)
    const sender = from ?? SERVICE_SENDER
    const plan = TWILIO[fate]
    const step = (status: string, errorCode?: number): Step => (stepAt) => {
      Object.assign(m, { status, from: sender, date_updated: rfc2822(stepAt) })
      if (status === 'sent') m.date_sent = rfc2822(stepAt)
      if (errorCode) m.error_code = errorCode
      if (status === 'delivered' || status === 'undelivered') m.price = (-PRICE_PER_SEGMENT * segments).toFixed(5)
      const params: Record<string, string> = {
        MessageSid: sid, SmsSid: sid, AccountSid: creds.accountSid, From: sender, To: to, MessageStatus: status, SmsStatus: status, ApiVersion: '2010-04-01',
        ...(service && { MessagingServiceSid: service }),
        ...(errorCode && { ErrorCode: String(errorCode) }),
        ...((status === 'delivered' || status === 'undelivered') && { RawDlrDoneDate: dlrDate(stepAt) }),
      }
      return { status, posts: callback ? [signed(callback, params, creds.authToken)] : [] }
    }
    const steps = [...(plan.sent ? [step('sent')] : []), ...(plan.final ? [step(plan.final, plan.errorCode)] : [])]
    core.accept({ id: sid, partIds: [sid], to, from: sender, body, parts: segments, outcome: fate, status: m.status, at }, steps)
    return reply.code(201).send(show(m))
  })

  app.get<{ Params: { account: string; file: string } }>(`${API}/Accounts/:account/Messages/:file`, async (req, reply) => {
    const m = req.params.file.endsWith('.json') ? messages.get(req.params.file.slice(0, -'.json'.length)) : undefined
    if (req.params.account !== creds.accountSid || !m) return notFound(reply, req.url.split('?')[0], 'not_found')
    return show(m)
  })

  app.setNotFoundHandler(async (req, reply) => notFound(reply, req.url.split('?')[0]))
  return { prefix: `${API}/`, internalError: () => ({ status: 500, body: twilioError(20500, 'Internal Server Error', 500) }) }
}

/** A status callback as Twilio posts it: form-encoded, signed, with the idempotency token Twilio adds. */
function signed(url: string, params: Record<string, string>, authToken: string): Post {
  return {
    url,
    body: new URLSearchParams(params).toString(),
    headers: {
      'content-type': 'application/x-www-form-urlencoded', 'user-agent': 'TwilioProxy/1.1',
      'x-twilio-signature': twilioSignature(authToken, url, params), 'i-twilio-idempotency-token': randomUUID(),
    },
  }
}

const isForm = (req: FastifyRequest) => (req.headers['content-type'] ?? '').toLowerCase().startsWith('application/x-www-form-urlencoded')
