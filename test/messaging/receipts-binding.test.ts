/**
 * Receipts bound to what was sent (issue 15, item 4), through Herald's receipt routes over HTTP and
 * the receipts engine: a receipt with a valid signature or token moves only the notification that
 * was sent through that provider with that reference; a final status stays as GOV.UK Notify keeps
 * it; Vonage's callback URL speaks for its own notification only.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { serveAtOwnUrl } from '../helpers/http.ts'
import type { FastifyInstance } from 'fastify'
import { createLogger } from '../../src/log.ts'
import { receiptsEngine } from '../../src/messaging/receipts/engine.ts'
import { receiptsQueue } from '../../src/messaging/receipts/queue.ts'
import { receiptRoutes, receiptUrls, twilioSignature } from '../../src/messaging/receipts/routes.ts'
import { createService, createTemplate } from '../../src/messaging/services.ts'
import { SECRET } from '../helpers/exposure.ts'
import { messagingWorld } from '../helpers/messaging.ts'
import { seedNotifications } from '../helpers/notifications.ts'

const w = messagingWorld()
const log = createLogger('silent')
let app: FastifyInstance
let publicUrl: string

beforeAll(async () => {
  ;({ url: publicUrl, app } = await serveAtOwnUrl((url) => [receiptRoutes({ db: w.t.db, log, publicUrl: url, secret: SECRET, twilioAuthToken: 'token' })]))
})
afterAll(async () => app.close())

const apply = () => receiptsEngine(log).step(w.t.db, new AbortController().signal)
/** A text as the send engine leaves it: handed to `provider` as `ref` (or, with provider null, a send never recorded). */
async function sent(provider: string | null, ref: string | null, opts: { status?: string; units?: number; serviceId?: string } = {}) {
  const service = opts.serviceId ? { id: opts.serviceId } : w.service
  const template = opts.serviceId ? (await w.t.db.query('SELECT id FROM templates WHERE service_id = $1', [opts.serviceId]))[0].id : w.template.id
  const [id] = await seedNotifications(w.t.db, service, template, [{ at: new Date(), status: opts.status ?? 'sending', units: opts.units ?? 1 }])
  await w.t.db.query(`UPDATE notifications SET provider = $2, provider_ref = $3, sent_at = CASE WHEN $2::text IS NULL THEN NULL ELSE sent_at END WHERE id = $1`,
    [id, provider, ref])
  return id
}
const row = async (id: string) => (await w.t.db.query('SELECT status, provider, provider_ref FROM notifications WHERE id = $1', [id]))[0]
/** A receipt Twilio signed (a valid X-Twilio-Signature: whoever holds the auth token, or a replay). */
function twilioReceipt(notification: string, params: Record<string, string>) {
  const url = `${publicUrl}/receipts/twilio?notification=${notification}`
  return fetch(url, {
    method: 'POST', body: new URLSearchParams(params).toString(),
    headers: { 'content-type': 'application/x-www-form-urlencoded', 'x-twilio-signature': twilioSignature('token', url, params) },
  })
}
const vonageReceipt = (url: string, body: Record<string, string>) =>
  fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) })
const kept = () => w.t.db.query(`SELECT failed_at IS NOT NULL AS failed, last_error FROM sms_receipts ORDER BY id`)
const due = () => w.t.db.query('UPDATE sms_receipts SET retry_at = now() WHERE failed_at IS NULL')

describe('a receipt applies only to what was sent through its provider with its reference', () => {
  it('a valid Twilio-signed receipt for a text sent through Vonage is refused, whatever reference it gives', async () => {
    const a = await sent('vonage', 'VON-A')
    expect((await twilioReceipt(a, { MessageSid: 'SMforged', MessageStatus: 'undelivered', ErrorCode: '30005' })).status).toBe(204)
    expect((await twilioReceipt(a, { MessageSid: 'VON-A', MessageStatus: 'undelivered', ErrorCode: '30005' })).status).toBe(204)
    expect(await apply()).toEqual({ applied: 0, refused: 2 })
    expect(await row(a)).toEqual({ status: 'sending', provider: 'vonage', provider_ref: 'VON-A' })
    // Kept for the operator, refused for good: not tried again.
    expect(await kept()).toEqual([{ failed: true, last_error: 'not the provider or reference its notification was sent with' }, expect.objectContaining({ failed: true })])
    expect(await apply()).toEqual({})
  })

  it('a signed receipt naming another service\'s notification with its own reference is refused; with that notification\'s reference it applies', async () => {
    const other = await createService(w.t.db, { name: 'Other service', smsSender: 'OTHER' })
    await createTemplate(w.t.db, other.id, 'Other', 'Hi', 'tester')
    const mine = await sent('twilio', 'SM-mine')
    const theirs = await sent('twilio', 'SM-theirs', { serviceId: other.id })
    expect((await twilioReceipt(theirs, { MessageSid: 'SM-mine', MessageStatus: 'undelivered', ErrorCode: '30005' })).status).toBe(204)
    expect(await apply()).toEqual({ applied: 0, refused: 1 })
    expect([(await row(theirs)).status, (await row(mine)).status]).toEqual(['sending', 'sending'])
    expect((await twilioReceipt(theirs, { MessageSid: 'SM-theirs', MessageStatus: 'delivered' })).status).toBe(204)
    expect(await apply()).toEqual({ applied: 1 })
    expect((await row(theirs)).status).toBe('delivered')
  })

  it('a receipt that outran its send waits, then is checked against the provider the send recorded', async () => {
    const a = await sent(null, null)
    expect((await twilioReceipt(a, { MessageSid: 'SMx', MessageStatus: 'delivered' })).status).toBe(204)
    expect(await apply()).toEqual({ applied: 0, waiting: 1 })
    await w.t.db.query(`UPDATE notifications SET provider = 'vonage', provider_ref = 'VON-A', sent_at = now() WHERE id = $1`, [a])
    await due()
    expect(await apply()).toEqual({ applied: 0, refused: 1 })
    expect((await row(a)).status).toBe('sending')
  })

  it('a text whose send a crash never recorded takes its provider and reference from a receipt made for it, on the receipt\'s last try', async () => {
    const a = await sent(null, null)
    await w.t.db.query(`UPDATE notifications SET claimed_by = 'dead-worker', claimed_until = now() - interval '1 minute' WHERE id = $1`, [a])
    expect((await twilioReceipt(a, { MessageSid: 'SM-crash', MessageStatus: 'delivered' })).status).toBe(204)
    const outcomes = [await apply()]
    for (let i = 1; i < receiptsQueue.retry.maxAttempts; i++) {
      await due()
      outcomes.push(await apply())
    }
    expect(outcomes.slice(0, -1).every((o) => o.waiting === 1)).toBe(true)
    expect(outcomes.at(-1)).toEqual({ applied: 1 })
    expect(await row(a)).toEqual({ status: 'delivered', provider: 'twilio', provider_ref: 'SM-crash' })
  })

  it('a Vonage text in parts: a later part\'s receipt (its own message id) is bound by its token; a one-part text\'s must carry its reference', async () => {
    const urls = receiptUrls(publicUrl, SECRET)
    const long = await sent('vonage', 'V-1', { units: 2 })
    const short = await sent('vonage', 'V-S')
    expect((await vonageReceipt(urls.vonage(long), { messageId: 'V-2', status: 'delivered', 'client-ref': long, 'err-code': '0' })).status).toBe(204)
    expect((await vonageReceipt(urls.vonage(short), { messageId: 'V-other', status: 'delivered', 'client-ref': short, 'err-code': '0' })).status).toBe(204)
    expect(await apply()).toEqual({ applied: 1, refused: 1 })
    expect([(await row(long)).status, (await row(short)).status]).toEqual(['delivered', 'sending'])
  })
})

describe('a final status stays as GOV.UK Notify keeps it', () => {
  it('delivered never becomes permanent-failure, temporary-failure never becomes delivered, later or in the same batch', async () => {
    const a = await sent('twilio', 'SM-a')
    expect((await twilioReceipt(a, { MessageSid: 'SM-a', MessageStatus: 'delivered' })).status).toBe(204)
    expect(await apply()).toEqual({ applied: 1 })
    expect((await twilioReceipt(a, { MessageSid: 'SM-a', MessageStatus: 'undelivered', ErrorCode: '30005' })).status).toBe(204)
    expect(await apply()).toEqual({ applied: 1 })
    expect((await row(a)).status).toBe('delivered')

    const b = await sent('twilio', 'SM-b', { status: 'temporary-failure' })
    expect((await twilioReceipt(b, { MessageSid: 'SM-b', MessageStatus: 'delivered' })).status).toBe(204)
    expect(await apply()).toEqual({ applied: 1 })
    expect((await row(b)).status).toBe('temporary-failure')

    // Two finals in one batch: the first to arrive wins, as the first to reach Notify would.
    const c = await sent('twilio', 'SM-c')
    await twilioReceipt(c, { MessageSid: 'SM-c', MessageStatus: 'delivered' })
    await twilioReceipt(c, { MessageSid: 'SM-c', MessageStatus: 'failed', ErrorCode: '30005' })
    await twilioReceipt(c, { MessageSid: 'SM-c', MessageStatus: 'sent' })
    expect(await apply()).toEqual({ applied: 3 })
    expect((await row(c)).status).toBe('delivered')
  })
})

describe('Vonage callback tokens are per notification', () => {
  it('the URL Herald gave for one text does not speak for another: 403 in Notify\'s error shape, nothing stored', async () => {
    const urls = receiptUrls(publicUrl, SECRET)
    const d = await sent('vonage', 'V-D')
    const e = await sent('vonage', 'V-E')
    for (const res of [
      await vonageReceipt(urls.vonage(e), { messageId: 'V-D', status: 'failed', 'client-ref': d, 'err-code': '3' }),
      await fetch(`${urls.vonage(e)}?${new URLSearchParams({ messageId: 'V-D', status: 'failed', 'client-ref': d, 'err-code': '3' })}`),
      await vonageReceipt(urls.vonage(e), { messageId: 'V-E', status: 'failed', 'err-code': '3' }), // no client-ref: nothing to bind to
    ]) {
      expect(res.status).toBe(403)
      expect(await res.json()).toEqual({ status_code: 403, errors: [{ error: 'AuthError', message: 'Invalid callback token' }] })
    }
    expect(await kept()).toEqual([])
    expect(await apply()).toEqual({})
    expect(urls.vonage(d)).not.toBe(urls.vonage(e))
    // Its own URL works.
    expect((await vonageReceipt(urls.vonage(d), { messageId: 'V-D', status: 'failed', 'client-ref': d, 'err-code': '3' })).status).toBe(204)
    expect(await apply()).toEqual({ applied: 1 })
    expect([(await row(d)).status, (await row(e)).status]).toEqual(['permanent-failure', 'sending'])
  })

  it('a bad X-Twilio-Signature, of any characters, is a 403 in the same shape', async () => {
    for (const sig of ['AAAA', 'é'.repeat(28)]) {
      const res = await fetch(`${publicUrl}/receipts/twilio?notification=x`, {
        method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded', 'x-twilio-signature': sig }, body: 'MessageSid=SM1&MessageStatus=delivered',
      })
      expect(res.status).toBe(403)
      expect(await res.json()).toEqual({ status_code: 403, errors: [{ error: 'AuthError', message: 'Invalid X-Twilio-Signature' }] })
    }
  })
})
