/**
 * Twilio Programmable Messaging, as the sandbox speaks it: POST /2010-04-01/Accounts/{sid}/Messages.json
 * (form-encoded, basic auth) → 201 with the message resource; errors as Twilio's JSON
 * {code, message, more_info, status}; status callbacks (sent, then delivered / undelivered) posted
 * form-encoded to StatusCallback, signed with X-Twilio-Signature.
 */
import { createHmac, randomBytes } from 'node:crypto'
import type { FastifyInstance, FastifyReply } from 'fastify'
import { fateOf } from './outcomes.ts'
import type { SandboxCore } from './server.ts'

const rfc2822 = (ms: number) => new Date(ms).toUTCString().replace('GMT', '+0000')

function error(reply: FastifyReply, status: number, code: number, message: string) {
  return reply.code(status).send({ code, message, more_info: `https://www.twilio.com/docs/errors/${code}`, status })
}

export function twilioRoutes(app: FastifyInstance, core: SandboxCore, creds: { accountSid: string; authToken: string }) {
  const { sandbox } = core
  const auth = `Basic ${Buffer.from(`${creds.accountSid}:${creds.authToken}`).toString('base64')}`
  const sign = (url: string, params: Record<string, string>) =>
    createHmac('sha1', creds.authToken).update(url + Object.keys(params).sort().map((k) => k + params[k]).join('')).digest('base64')

  app.post<{ Params: { sid: string }; Body: Record<string, string> }>('/2010-04-01/Accounts/:sid/Messages.json', async (req, reply) => {
    if (req.headers.authorization !== auth) return error(reply, 401, 20003, 'Authenticate')
    if (req.params.sid !== creds.accountSid) return error(reply, 404, 20404, 'The requested resource was not found')
    if (core.draw() < sandbox.knobs.rateLimitRate) {
      sandbox.stats.status429++
      return error(reply, 429, 20429, 'Too Many Requests')
    }
    if (core.draw() < sandbox.knobs.failureRate) {
      sandbox.stats.status5xx++
      return error(reply, 500, 20500, 'Internal Server Error')
    }
    const b = req.body ?? {}
    const refuse = (code: number, message: string) => {
      sandbox.stats.refused++
      return error(reply, 400, code, message)
    }
    if (!b.To) return refuse(21604, "A 'To' phone number is required.")
    if (!b.From && !b.MessagingServiceSid) return refuse(21603, "A 'From' phone number is required.")
    if (!b.Body) return refuse(21602, 'Message body is required.')
    if (b.Body.length > 1600) return refuse(21617, 'The concatenated message body exceeds the 1600 character limit.')
    const fate = fateOf(b.To, sandbox.knobs.outcomes, core.draw)
    if (!/^\+[1-9]\d{6,14}$/.test(b.To) || fate === 'invalid') return refuse(21211, `The 'To' number ${b.To} is not a valid phone number.`)

    const sid = `SM${randomBytes(16).toString('hex')}`
    const at = Date.now()
    const entry = { id: sid, to: b.To, from: b.From ?? b.MessagingServiceSid, body: b.Body, parts: Math.ceil(b.Body.length / 153) || 1, status: 'queued', at }
    sandbox.ledger.push(entry)
    sandbox.stats.accepted++
    if (b.StatusCallback && fate !== 'silent') {
      const final = fate === 'delivered' ? { status: 'delivered' } : { status: 'undelivered', code: fate === 'permanent' ? '30005' : '30003' }
      for (const step of [{ status: 'sent' }, final]) {
        core.receipt(() => {
          entry.status = step.status
          const params: Record<string, string> = {
            MessageSid: sid, SmsSid: sid, AccountSid: creds.accountSid, From: entry.from, To: b.To, MessageStatus: step.status, SmsStatus: step.status,
            ApiVersion: '2010-04-01', ...('code' in step && step.code ? { ErrorCode: step.code } : {}),
          }
          return fetch(b.StatusCallback, {
            method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded', 'x-twilio-signature': sign(b.StatusCallback, params) },
            body: new URLSearchParams(params).toString(),
          })
        })
      }
    }
    await core.latency()
    return reply.code(201).send({
      sid, account_sid: creds.accountSid, to: b.To, from: b.From ?? null, messaging_service_sid: b.MessagingServiceSid ?? null, body: b.Body,
      status: 'queued', num_segments: String(entry.parts), num_media: '0', direction: 'outbound-api', api_version: '2010-04-01',
      date_created: rfc2822(at), date_updated: rfc2822(at), date_sent: null, price: null, price_unit: 'USD', error_code: null, error_message: null,
      uri: `/2010-04-01/Accounts/${creds.accountSid}/Messages/${sid}.json`,
      subresource_uris: { media: `/2010-04-01/Accounts/${creds.accountSid}/Messages/${sid}/Media.json` },
    })
  })
}
