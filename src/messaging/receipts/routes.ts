/**
 * Delivery receipt endpoints, one per provider, each authenticated and each bound to one
 * notification. Twilio's by its X-Twilio-Signature (HMAC-SHA1 of the URL, which names the
 * notification, and the posted fields with the auth token). Vonage's by a token in the callback URL
 * that is a keyed hash of the one notification it was given for: it must match the notification the
 * receipt names (`client-ref`), so a URL seen for one text cannot speak for another. Vonage can sign
 * DLRs, but only once its support enables it per account ("signed webhooks ... contact support",
 * https://developer.vonage.com/en/getting-started/concepts/signing-messages); the token works on
 * every account and binds to the notification, which a signature alone would not.
 * A receipt is stored as it came (sms_receipts) and answered at once; the receipts engine checks it
 * against what was sent (provider and reference) and applies it.
 * A refusal is a 403 in Notify's error shape. Providers retry a non-2xx for a while, which is what a
 * refusal should cost: a forger gains nothing, and a real receipt refused (the secret key changed
 * while texts were on their way) shows in the provider's console and Herald's log instead of being
 * dropped in silence.
 */
import { createHmac, timingSafeEqual } from 'node:crypto'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import type { Db } from '../../db/types.ts'
import type { Logger } from '../../log.ts'
import { deriveKey } from '../../privacy/keys.ts'

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i
const FINAL_TWILIO: Record<string, string> = { delivered: 'delivered', undelivered: 'temporary-failure', failed: 'temporary-failure', sent: 'pending' }
// Twilio error codes that no retry will cure (unknown or unreachable destination, landline, blocked, opted out).
const PERMANENT_TWILIO = new Set(['30004', '30005', '30006', '30007', '21610', '21614'])
const VONAGE: Record<string, string> = { delivered: 'delivered', expired: 'temporary-failure', failed: 'permanent-failure', rejected: 'permanent-failure', accepted: 'pending', buffered: 'pending' }
// Vonage err-codes that a later try may cure (absent subscriber, unknown, general errors).
const TEMPORARY_VONAGE = new Set(['1', '5', '6', '7', '99'])

/** Twilio's request signature: base64 HMAC-SHA1 of the full URL and each POST field name+value, names sorted. */
export function twilioSignature(authToken: string, url: string, params: Record<string, string>): string {
  const data = url + Object.keys(params).sort().map((k) => k + params[k]).join('')
  return createHmac('sha1', authToken).update(data).digest('base64')
}

/** The key of callback tokens: derived from HERALD_SECRET_KEY for receipts only. */
export const receiptKey = (secret: string) => deriveKey(secret, 'messaging:receipts')

/** One notification's callback token: a keyed hash of its id, 128 bits in hex. */
export const receiptToken = (key: Buffer, notificationId: string) =>
  createHmac('sha256', key).update(`vonage:${notificationId.toLowerCase()}`).digest('hex').slice(0, 32)

export interface ReceiptUrls { twilio: (id: string) => string; vonage: (id: string) => string }

/** The callback URLs Herald gives providers with each text, under its public address. */
export function receiptUrls(publicUrl: string, secret: string): ReceiptUrls {
  const key = receiptKey(secret)
  return { twilio: (id) => `${publicUrl}/receipts/twilio?notification=${id}`, vonage: (id) => `${publicUrl}/receipts/vonage/${receiptToken(key, id)}` }
}

/** Constant-time equality of two strings as bytes (any characters: lengths are compared as bytes, not UTF-16 units). */
export function same(a: string, b: string): boolean {
  const x = Buffer.from(a)
  const y = Buffer.from(b)
  return x.length === y.length && timingSafeEqual(x, y)
}

const text = (v: unknown) => (typeof v === 'string' ? v : typeof v === 'number' ? String(v) : undefined)

export function receiptRoutes(opts: { db: Db; log: Logger; publicUrl: string; secret: string; twilioAuthToken: string }) {
  const { db, log } = opts
  const key = receiptKey(opts.secret)
  const store = (r: { notificationId: string | null; provider: string; ref: string | null; status: string; detail: object }) =>
    db.query(`INSERT INTO sms_receipts (notification_id, provider, provider_ref, status, detail) VALUES ($1, $2, $3, $4, $5)`,
      [r.notificationId && UUID.test(r.notificationId) ? r.notificationId : null, r.provider, r.ref, r.status, r.detail])
  const refuse = (reply: FastifyReply, provider: string, message: string) => {
    log.warn({ provider }, 'delivery receipt refused: bad signature or token')
    return reply.code(403).send({ status_code: 403, errors: [{ error: 'AuthError', message }] })
  }

  return (app: FastifyInstance) => {
    void app.register(async (scope) => {
      parseForms(scope)

      // The URL (signed with the fields) names the notification; the engine checks that it was sent
      // through Twilio as this MessageSid.
      scope.post('/receipts/twilio', async (req, reply) => {
        const params = (req.body ?? {}) as Record<string, string>
        if (!twilioSigned(req, opts.twilioAuthToken, opts.publicUrl)) {
          return refuse(reply, 'twilio', 'Invalid X-Twilio-Signature')
        }
        const twilioStatus = params.MessageStatus ?? params.SmsStatus
        let status = Object.hasOwn(FINAL_TWILIO, twilioStatus ?? '') ? FINAL_TWILIO[twilioStatus] : undefined
        if (status === 'temporary-failure' && PERMANENT_TWILIO.has(params.ErrorCode ?? '')) status = 'permanent-failure'
        // queued, accepted, sending: the text is still on its way; nothing to record.
        if (status) {
          await store({ notificationId: text((req.query as { notification?: unknown }).notification) ?? null, provider: 'twilio', ref: params.MessageSid ?? null,
            status, detail: { status: twilioStatus, error_code: params.ErrorCode ?? null } })
        }
        return reply.code(204).send()
      })

      const vonage = async (req: FastifyRequest<{ Params: { token: string } }>, reply: FastifyReply, body: Record<string, unknown>) => {
        // The token must be the one made for the notification this receipt names, and no other.
        const id = text(body['client-ref'])
        if (!id || !UUID.test(id) || !same(req.params.token, receiptToken(key, id))) return refuse(reply, 'vonage', 'Invalid callback token')
        const given = text(body.status) ?? ''
        let status = Object.hasOwn(VONAGE, given) ? VONAGE[given] : undefined
        if (status === 'permanent-failure' && given === 'failed' && TEMPORARY_VONAGE.has(text(body['err-code']) ?? '')) status = 'temporary-failure'
        if (status) {
          await store({ notificationId: id, provider: 'vonage', ref: text(body.messageId) ?? null, status,
            detail: { status: given, error_code: text(body['err-code']) ?? null } })
        }
        return reply.code(204).send()
      }
      // Vonage sends receipts as a POST (JSON or form) or a GET with the fields in the query, as its dashboard is set.
      const fields = (v: unknown) => (typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : {})
      scope.post<{ Params: { token: string } }>('/receipts/vonage/:token', (req, reply) => vonage(req, reply, fields(req.body)))
      scope.get<{ Params: { token: string } }>('/receipts/vonage/:token', (req, reply) => vonage(req, reply, fields(req.query)))
    })
  }
}

/** Providers post forms (Twilio always, Vonage sometimes): parsed to a flat object of strings. */
export function parseForms(scope: FastifyInstance) {
  scope.addContentTypeParser('application/x-www-form-urlencoded', { parseAs: 'string' }, (_req, body, done) => {
    done(null, Object.fromEntries(new URLSearchParams(body as string)))
  })
}

/** Twilio signed this request: over its URL as Twilio reached it (publicUrl + path) and its form fields. */
export function twilioSigned(req: FastifyRequest, authToken: string, publicUrl: string): boolean {
  const fields = (req.body ?? {}) as Record<string, string>
  return same(String(req.headers['x-twilio-signature'] ?? ''), twilioSignature(authToken, `${publicUrl}${req.url}`, fields))
}
