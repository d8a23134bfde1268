/**
 * Twilio Programmable Messaging: POST /2010-04-01/Accounts/{sid}/Messages.json (form-encoded, basic
 * auth), 201 with the message's sid. Receipts come to the StatusCallback URL given with each text,
 * which names the notification, signed with X-Twilio-Signature (receipts/twilio.ts checks it).
 */
import { Agent } from 'undici'
import { send } from '../../http/outbound.ts'
import { twilioFailure } from './failure-reasons.ts'
import { ProviderError, transportError, type OutgoingSms, type SmsProvider } from './provider.ts'

// Error codes that are about the number itself: https://www.twilio.com/docs/api/errors
const RECIPIENT = new Set([21211, 21214, 21408, 21610, 21612, 21614, 21635])

export class TwilioSms implements SmsProvider {
  readonly name = 'twilio'
  private readonly agent: Agent
  private readonly auth: string

  constructor(private readonly opts: { url: string; accountSid: string; authToken: string; timeoutMs: number; callbackUrl?: (id: string) => string
    /** Keep-alive connections to the provider: at least the send concurrency, or calls queue for one (default 64). */
    connections?: number }) {
    this.agent = new Agent({ keepAliveTimeout: 30_000, connections: opts.connections ?? 64 })
    this.auth = `Basic ${Buffer.from(`${opts.accountSid}:${opts.authToken}`).toString('base64')}`
  }

  async send(sms: OutgoingSms): Promise<string> {
    const form = new URLSearchParams({ To: sms.to, From: sms.from, Body: sms.body })
    if (this.opts.callbackUrl) form.set('StatusCallback', this.opts.callbackUrl(sms.id))
    let res
    try {
      res = await send(this.agent, `${this.opts.url}/2010-04-01/Accounts/${this.opts.accountSid}/Messages.json`, this.opts.timeoutMs, {
        method: 'POST', headers: { authorization: this.auth, 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' }, body: form.toString(),
      })
    } catch (err) {
      throw transportError(this.name, err)
    }
    const body = (await res.body.json().catch(() => ({}))) as { sid?: string; code?: number }
    if ((res.statusCode === 201 || res.statusCode === 200) && body.sid) return body.sid
    const why = `twilio: HTTP ${res.statusCode}${body.code ? ` (${body.code})` : ''}`
    if (res.statusCode === 400 && body.code !== undefined && RECIPIENT.has(body.code)) throw new ProviderError(why, 'recipient', res.statusCode, twilioFailure(body.code))
    // Accepted, but its answer could not be read (cut off, not JSON): the text may be on its way, and
    // handing it to another provider could text twice. It waits for its receipt instead.
    if (res.statusCode >= 200 && res.statusCode < 300) throw new ProviderError(`${why} without a message sid`, 'unknown', res.statusCode)
    throw new ProviderError(why, 'retry', res.statusCode)
  }

  close = () => this.agent.close()
}
