/**
 * Inbound text webhooks, one per provider, authenticated as the receipt webhooks are
 * (receipts/routes.ts): Twilio's by its X-Twilio-Signature over Herald's URL and the posted fields;
 * Vonage's by a token in the URL, a keyed hash (the receipts key) of "vonage:inbound", since its
 * inbound webhook is one URL set in its dashboard (signed webhooks need Vonage's support to enable
 * them per account). A refusal is a 403 in Notify's error shape and stores nothing.
 * The provider numbers residents text are set per service (`herald service inbound-number`); the
 * provider's dashboard points each number's webhook at the URL `inboundUrls` gives.
 * Answers: Twilio gets an empty TwiML <Response/> (no auto-reply: the carrier or Twilio's own
 * opt-out handling answers STOP), Vonage a 204; both as soon as the text is stored.
 * Vonage splits a long text into parts (concat-ref); each part is stored as a text of its own.
 */
import { createHmac } from 'node:crypto'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import type { Db } from '../../db/types.ts'
import type { Logger } from '../../log.ts'
import type { Sealer } from '../../privacy/seal.ts'
import { parseForms, receiptKey, same, twilioSigned } from '../receipts/routes.ts'
import { receiveText, type Inbound } from './receive.ts'

const TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response/>'

/** The token of Vonage's inbound URL: 128 bits of a keyed hash, in hex. */
export const vonageInboundToken = (secret: string) => createHmac('sha256', receiptKey(secret)).update('vonage:inbound').digest('hex').slice(0, 32)

/** The webhook URLs to set in each provider's dashboard for the inbound numbers, under Herald's public address. */
export function inboundUrls(publicUrl: string, secret: string) {
  return { twilio: `${publicUrl}/inbound/twilio`, vonage: `${publicUrl}/inbound/vonage/${vonageInboundToken(secret)}` }
}

const text = (v: unknown) => (typeof v === 'string' ? v : typeof v === 'number' ? String(v) : undefined)

/** Vonage's message-timestamp, "2026-11-23 12:00:00" in UTC. */
function vonageTime(v: string | undefined): Date | undefined {
  const m = /^(\d{4}-\d\d-\d\d) (\d\d:\d\d:\d\d)$/.exec(v ?? '')
  const at = m ? new Date(`${m[1]}T${m[2]}Z`) : undefined
  return at && !Number.isNaN(at.getTime()) ? at : undefined
}

export function inboundRoutes(opts: { db: Db; sealer: Sealer; log: Logger; publicUrl: string; secret: string; twilioAuthToken: string }) {
  const { db, sealer, log } = opts
  const token = vonageInboundToken(opts.secret)
  const refuse = (reply: FastifyReply, provider: string, message: string) => {
    log.warn({ provider }, 'inbound text refused: bad signature or token')
    return reply.code(403).send({ status_code: 403, errors: [{ error: 'AuthError', message }] })
  }
  const missing = (reply: FastifyReply, fields: string) =>
    reply.code(400).send({ status_code: 400, errors: [{ error: 'BadRequestError', message: `${fields} missing` }] })
  const receive = async (m: Inbound) => {
    const r = await receiveText(db, sealer, m)
    // Never the numbers or the words: what happened, and with which provider.
    if (r.outcome === 'stored') log.info({ provider: m.provider, service: r.serviceId, optedOut: r.optedOut, optedIn: r.optedIn }, 'inbound text received')
    else log.warn({ provider: m.provider, outcome: r.outcome }, 'inbound text not stored')
    return r
  }

  return (app: FastifyInstance) => {
    void app.register(async (scope) => {
      parseForms(scope)

      scope.post('/inbound/twilio', async (req, reply) => {
        const p = (req.body ?? {}) as Record<string, string>
        if (!twilioSigned(req, opts.twilioAuthToken, opts.publicUrl)) {
          return refuse(reply, 'twilio', 'Invalid X-Twilio-Signature')
        }
        if (!p.From || !p.To || !p.MessageSid) return missing(reply, 'From, To and MessageSid')
        await receive({ provider: 'twilio', ref: p.MessageSid, from: p.From, to: p.To, body: p.Body ?? '' })
        return reply.code(200).type('text/xml').send(TWIML)
      })

      const vonage = async (req: FastifyRequest<{ Params: { token: string } }>, reply: FastifyReply, b: Record<string, unknown>) => {
        if (!same(req.params.token, token)) return refuse(reply, 'vonage', 'Invalid callback token')
        const from = text(b.msisdn)
        const to = text(b.to)
        const ref = text(b.messageId)
        if (!from || !to || !ref) return missing(reply, 'msisdn, to and messageId')
        // A binary message (data, udh) has no text to keep: taken, as Vonage needs, and dropped.
        if (text(b.type) === 'binary') return reply.code(204).send()
        await receive({ provider: 'vonage', ref, from, to, body: text(b.text) ?? '', receivedAt: vonageTime(text(b['message-timestamp'])) })
        return reply.code(204).send()
      }
      // Vonage posts inbound texts as GET, POST (form) or POST-JSON, as its dashboard is set.
      const fields = (v: unknown) => (typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : {})
      scope.post<{ Params: { token: string } }>('/inbound/vonage/:token', (req, reply) => vonage(req, reply, fields(req.body)))
      scope.get<{ Params: { token: string } }>('/inbound/vonage/:token', (req, reply) => vonage(req, reply, fields(req.query)))
    })
  }
}
