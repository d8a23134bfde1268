/**
 * Delivery receipt endpoints, one per provider, each authenticated: Twilio's by its
 * X-Twilio-Signature (HMAC-SHA1 of the URL and the posted fields with the auth token), Vonage's by a
 * token in the callback URL Herald gave (a keyed hash; Vonage signs receipts only on request).
 * A receipt is stored as it came (sms_receipts) and answered at once; the receipts engine applies
 * them in batches.
 */
import { createHmac, timingSafeEqual } from 'node:crypto'
import type { FastifyInstance, FastifyRequest } from 'fastify'
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

export const vonageToken = (secret: string) => createHmac('sha256', deriveKey(secret, 'messaging:receipts')).update('vonage').digest('hex').slice(0, 32)

export interface ReceiptUrls { twilio: (id: string) => string; vonage: (id: string) => string }

/** The callback URLs Herald gives providers, under its public address. */
export function receiptUrls(publicUrl: string, secret: string): ReceiptUrls {
  const token = vonageToken(secret)
  return { twilio: (id) => `${publicUrl}/receipts/twilio?notification=${id}`, vonage: () => `${publicUrl}/receipts/vonage/${token}` }
}

const same = (a: string, b: string) => a.length === b.length && timingSafeEqual(Buffer.from(a), Buffer.from(b))

export function receiptRoutes(opts: { db: Db; log: Logger; publicUrl: string; secret: string; twilioAuthToken: string }) {
  const { db, log } = opts
  const token = vonageToken(opts.secret)
  const store = (r: { notificationId: string | null; provider: string; ref: string | null; status: string; detail: object }) =>
    db.query(`INSERT INTO sms_receipts (notification_id, provider, provider_ref, status, detail) VALUES ($1, $2, $3, $4, $5)`,
      [r.notificationId && UUID.test(r.notificationId) ? r.notificationId : null, r.provider, r.ref, r.status, r.detail])
  const refused = (provider: string) => log.warn({ provider }, 'delivery receipt refused: bad signature or token')

  return (app: FastifyInstance) => {
    void app.register(async (scope) => {
      scope.addContentTypeParser('application/x-www-form-urlencoded', { parseAs: 'string' }, (_req, body, done) => {
        done(null, Object.fromEntries(new URLSearchParams(body as string)))
      })

      scope.post('/receipts/twilio', async (req, reply) => {
        const params = (req.body ?? {}) as Record<string, string>
        const url = `${opts.publicUrl}${req.url}`
        if (!same(String(req.headers['x-twilio-signature'] ?? ''), twilioSignature(opts.twilioAuthToken, url, params))) {
          refused('twilio')
          return reply.code(403).send({ error: 'bad signature' })
        }
        const twilioStatus = params.MessageStatus ?? params.SmsStatus
        let status = FINAL_TWILIO[twilioStatus]
        if (status === 'temporary-failure' && PERMANENT_TWILIO.has(params.ErrorCode ?? '')) status = 'permanent-failure'
        // queued, accepted, sending: the text is still on its way; nothing to record.
        if (status) {
          await store({ notificationId: (req.query as { notification?: string }).notification ?? null, provider: 'twilio', ref: params.MessageSid ?? null,
            status, detail: { status: twilioStatus, error_code: params.ErrorCode ?? null } })
        }
        return reply.code(204).send()
      })

      const vonage = async (req: FastifyRequest<{ Params: { token: string } }>, body: Record<string, string>) => {
        if (!same(req.params.token, token)) {
          refused('vonage')
          return false
        }
        let status = VONAGE[body.status]
        if (status === 'permanent-failure' && body.status === 'failed' && TEMPORARY_VONAGE.has(String(body['err-code']))) status = 'temporary-failure'
        if (status) {
          await store({ notificationId: body['client-ref'] ?? null, provider: 'vonage', ref: body.messageId ?? null, status,
            detail: { status: body.status, error_code: body['err-code'] ?? null } })
        }
        return true
      }
      // Vonage sends receipts as a POST (JSON or form) or a GET with the fields in the query, as its dashboard is set.
      scope.post<{ Params: { token: string } }>('/receipts/vonage/:token', async (req, reply) =>
        reply.code((await vonage(req, (req.body ?? {}) as Record<string, string>)) ? 204 : 403).send())
      scope.get<{ Params: { token: string } }>('/receipts/vonage/:token', async (req, reply) =>
        reply.code((await vonage(req, req.query as Record<string, string>)) ? 204 : 403).send())
    })
  }
}
