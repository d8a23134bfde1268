/**
 * Vonage (Nexmo) SMS API: POST /sms/json with api_key and api_secret, always HTTP 200 with a status
 * per part ("0" is success). The notification id goes as client-ref, which every delivery receipt
 * echoes; receipts come to the callback URL given with each text (receipts/vonage.ts).
 */
import { Agent } from 'undici'
import { send } from '../../http/outbound.ts'
import { vonageSubmitFailure } from './failure-reasons.ts'
import { ProviderError, transportError, type OutgoingSms, type SmsProvider } from './provider.ts'

// Statuses about the text or number itself: https://developer.vonage.com/en/messaging/sms/guides/troubleshooting-sms
const RECIPIENT = new Set(['3', '6', '7', '15', '29', '33'])

interface Part { status: string; 'message-id'?: string; 'error-text'?: string }

export class VonageSms implements SmsProvider {
  readonly name = 'vonage'
  private readonly agent: Agent

  constructor(private readonly opts: { url: string; apiKey: string; apiSecret: string; timeoutMs: number; callbackUrl?: (id: string) => string
    /** Keep-alive connections to the provider: at least the send concurrency, or calls queue for one (default 64). */
    connections?: number }) {
    this.agent = new Agent({ keepAliveTimeout: 30_000, connections: opts.connections ?? 64 })
  }

  async send(sms: OutgoingSms): Promise<string> {
    const form = new URLSearchParams({
      api_key: this.opts.apiKey, api_secret: this.opts.apiSecret, from: sms.from.replace(/^\+/, ''), to: sms.to.replace(/^\+/, ''),
      text: sms.body, type: sms.encoding === 'ucs2' ? 'unicode' : 'text', 'client-ref': sms.id,
    })
    if (this.opts.callbackUrl) form.set('callback', this.opts.callbackUrl(sms.id))
    let res
    try {
      res = await send(this.agent, `${this.opts.url}/sms/json`, this.opts.timeoutMs, {
        method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' }, body: form.toString(),
      })
    } catch (err) {
      throw transportError(this.name, err)
    }
    const body = (await res.body.json().catch(() => ({}))) as { messages?: Part[] }
    const first = body.messages?.[0]
    if (res.statusCode === 200 && first?.status === '0' && first['message-id']) return first['message-id']
    const why = `vonage: HTTP ${res.statusCode}${first ? ` status ${first.status}` : ''}`
    if (first && RECIPIENT.has(first.status)) throw new ProviderError(why, 'recipient', res.statusCode, vonageSubmitFailure(first.status))
    // Answered 200 but no message could be read (cut off, not JSON): the text may be on its way, and
    // handing it to another provider could text twice. It waits for its receipt instead.
    if (res.statusCode === 200 && !first) throw new ProviderError(`${why} without a readable answer`, 'unknown', res.statusCode)
    throw new ProviderError(why, 'retry', res.statusCode)
  }

  close = () => this.agent.close()
}
