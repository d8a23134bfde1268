/**
 * Vonage's SMS API as the sandbox speaks it: `POST /sms/json`, form-encoded or JSON, with `api_key`
 * and `api_secret` among the fields. It always answers HTTP 200; each part of the text has its own
 * entry and `status` ("0" accepted; else an `error-text`, and then one entry for the whole request).
 * A long text is split into parts, each with its own message-id and its own delivery receipt,
 * posted as JSON to `callback`.
 */
import type { FastifyInstance } from 'fastify'
import { VONAGE } from './outcomes.ts'
import { isHttpUrl, type Post, type Step } from './receipts.ts'
import { split } from './segments.ts'
import type { ProviderApi, SmsCore } from './server.ts'

const TO = /^\d{7,15}$/
// A number (digits) or an alphanumeric sender ID of up to 11 characters.
const FROM = /^(\d{1,15}|[A-Za-z0-9 ]{1,11})$/
const MAX_CLIENT_REF = 100
const PRICE = 0.0079
// MCC 001 / MNC 01: the pair ITU reserves for test networks, as the lookup sandbox's carriers use.
const NETWORK = '00101'

/** `2026-11-23 12:00:00` in UTC. */
const stamp = (ms: number) => new Date(ms).toISOString().slice(0, 19).replace('T', ' ')
/** YYMMDDHHMM in UTC: when the carrier's receipt came. */
const scts = (ms: number) => new Date(ms).toISOString().slice(2, 16).replace(/[-T:]/g, '')

/** A refusal: one entry for the whole request, its status and error-text. */
const refusal = (status: string, errorText: string) => ({ 'message-count': '1', messages: [{ status, 'error-text': errorText }] })

export function vonageRoutes(app: FastifyInstance, core: SmsCore, creds: { apiKey: string; apiSecret: string }): ProviderApi {
  let balance = 100 // the account's made-up credit, in EUR, spent by each part sent

  app.post<{ Body: unknown }>('/sms/json', async (req) => {
    const p = fields(req.body)
    const refuse = (kind: string, status: string, errorText: string) => {
      core.refuse(kind)
      return refusal(status, errorText)
    }
    if (!p.api_key) return refuse('auth', '2', 'Missing api_key')
    if (!p.api_secret) return refuse('auth', '2', 'Missing api_secret')
    if (p.api_key !== creds.apiKey || p.api_secret !== creds.apiSecret) return refuse('auth', '4', 'Bad Credentials')
    const injected = core.injected()
    if (injected === 'rateLimit') return refusal('1', 'Throughput Rate Exceeded - please wait [ 1000 ] and retry')
    if (injected === 'serverError') return refusal('5', 'Internal Error')
    const { from, to, text, callback } = p
    const type = p.type ?? 'text'
    const clientRef = p['client-ref']
    if (!from) return refuse('missing_from', '2', 'Missing from param')
    if (!to) return refuse('missing_to', '2', 'Missing to param')
    // Vonage also sends binary, wappush, vcard and vcal; the sandbox speaks only text.
    if (type !== 'text' && type !== 'unicode') return refuse('invalid_type', '3', 'Invalid type parameter')
    if (!text) return refuse('missing_text', '2', 'Missing text param')
    if (!TO.test(to)) return refuse('invalid_to', '3', 'Invalid to address')
    if (!FROM.test(from)) return refuse('invalid_from', '3', 'Invalid from param')
    if (clientRef !== undefined && clientRef.length > MAX_CLIENT_REF) return refuse('invalid_client_ref', '3', 'Invalid client-ref param')
    if (callback && !isHttpUrl(callback)) return refuse('invalid_callback', '23', 'Invalid Callback Url')
    const fate = core.fate(to)
    // Status 6: the platform could not process it, "for example, an un-recognized number prefix".
    if (fate === 'invalidNumber') return refuse('unroutable', '6', 'Unroutable message - rejected')

    const at = core.now()
    const ids = split(text, type === 'unicode' ? 'ucs2' : 'gsm').map(() => core.hex(16).toUpperCase())
    const price = PRICE.toFixed(8)
    const wantsReceipts = !!callback && !['0', 'false'].includes(p['status-report-req'] ?? '')
    const plan = VONAGE[fate]
    const steps: Step[] = plan.final ? [(stepAt) => ({
      status: plan.final!,
      posts: wantsReceipts ? ids.map((id): Post => ({
        url: callback!,
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({
          msisdn: to, to: from, 'network-code': NETWORK, messageId: id, price, status: plan.final, scts: scts(stepAt), 'err-code': plan.errCode,
          ...(clientRef !== undefined ? { 'client-ref': clientRef } : {}), 'api-key': creds.apiKey, 'message-timestamp': stamp(stepAt),
        }),
      })) : [],
    })] : []
    core.accept({ id: ids[0], partIds: ids, to, from, body: text, parts: ids.length, outcome: fate, status: 'accepted', at }, steps)
    return {
      'message-count': String(ids.length),
      messages: ids.map((id) => ({
        to, 'message-id': id, status: '0', 'remaining-balance': (balance = Math.max(0, balance - PRICE)).toFixed(8), 'message-price': price, network: NETWORK,
        ...(clientRef !== undefined ? { 'client-ref': clientRef } : {}),
      })),
    }
  })

  return { prefix: '/sms/', internalError: () => ({ status: 200, body: refusal('5', 'Internal Error') }) }
}

/** The request's fields as Vonage reads them: a JSON number or boolean is its text ("to": 12125550100 is "12125550100"). */
function fields(body: unknown): Record<string, string | undefined> {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) return {}
  return Object.fromEntries(Object.entries(body).filter(([, x]) => ['string', 'number', 'boolean'].includes(typeof x)).map(([k, x]) => [k, String(x)]))
}
