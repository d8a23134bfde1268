/**
 * Inbound texts: a resident's reply through the SMS sandboxes' webhooks (Twilio's signed form, Vonage's JSON with the URL's
 * token), stored sealed, listed by the official client's getReceivedTexts with older_than paging as GOV.UK Notify pages it,
 * refused (403, nothing stored) when the signature or token is wrong, stored once when a provider posts again, forwarded to
 * the service's inbound callback, and deleted by retention with the service's texts.
 */
import { beforeEach, describe, expect, it } from 'vitest'
import notifyClient from 'notifications-node-client'
import { createLogger } from '../../src/log.ts'
import { inboundNumbersOf, removeInboundNumber, setInboundNumber } from '../../src/messaging/inbound/numbers.ts'
import { inboundCallbackBody, receiveText } from '../../src/messaging/inbound/receive.ts'
import { inboundUrls } from '../../src/messaging/inbound/routes.ts'
import { runRetention, setRetention } from '../../src/messaging/retention/retention.ts'
import { createService } from '../../src/messaging/services.ts'
import { startSmsSandbox, twilioSignature } from '../../src/sandbox/sms/server.ts'
import { LocalStore } from '../../src/storage/local.ts'
import { SECRET } from '../helpers/exposure.ts'
import { INBOUND_NUMBER, inboundWorld, reply } from '../helpers/inbound.ts'
import { callApi, jobStore, messagingWorld, sealer } from '../helpers/messaging.ts'

const { NotifyClient } = notifyClient as { NotifyClient: new (base: string, key: string) => any }
const w = messagingWorld()
const iw = inboundWorld(w)
const RESIDENT = '+12125550123'
const stored = () => w.t.db.query(`SELECT id::text, service_id::text, notify_number, user_number_hash, user_number_ct, content_ct, provider, provider_ref,
  provider_date FROM received_texts ORDER BY created_at, id`)
const bytes = (b: Buffer | Uint8Array) => Buffer.from(b)

beforeEach(async () => {
  await setInboundNumber(w.t.db, w.service.id, INBOUND_NUMBER)
})

describe('inbound texts', () => {
  it('stores a Twilio reply sealed and lists it through the official client', async () => {
    expect(await reply(iw, RESIDENT, 'Is my result ready?')).toMatchObject({ code: 200, status: 200, provider: 'twilio' })
    const [row] = await stored()
    expect(row).toMatchObject({ service_id: w.service.id, notify_number: INBOUND_NUMBER, provider: 'twilio', provider_ref: iw.twilio.inbound[0].id })
    // Sealed at rest: neither the number nor the words are in the row; the number is found by its keyed hash.
    expect(bytes(row.user_number_hash)).toEqual(sealer.hash(RESIDENT))
    for (const ct of [row.user_number_ct, row.content_ct]) {
      expect(bytes(ct).includes(Buffer.from('Is my result'))).toBe(false)
      expect(bytes(ct).includes(Buffer.from('2125550123'))).toBe(false)
    }
    const { data } = await new NotifyClient(w.url, w.keys.normal).getReceivedTexts()
    expect(data.received_text_messages).toEqual([{
      id: row.id, created_at: expect.stringMatching(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/), service_id: w.service.id,
      notify_number: INBOUND_NUMBER, user_number: RESIDENT, content: 'Is my result ready?',
    }])
    expect(data.links).toEqual({ current: `${w.url}/v2/received-text-messages`, next: `${w.url}/v2/received-text-messages?older_than=${row.id}` })
  })

  it('stores a Vonage reply (its JSON webhook, the URL token) with the time Vonage gives', async () => {
    expect(await reply(iw, RESIDENT, 'Thank you ✓', { provider: 'vonage' })).toMatchObject({ code: 200, status: 204, provider: 'vonage' })
    const [row] = await stored()
    expect(row).toMatchObject({ provider: 'vonage', provider_ref: iw.vonage.inbound[0].id, notify_number: INBOUND_NUMBER })
    expect(Math.abs(new Date(row.provider_date).getTime() - Date.now())).toBeLessThan(5000)
    const { data } = await new NotifyClient(w.url, w.keys.test).getReceivedTexts()
    expect(data.received_text_messages).toMatchObject([{ user_number: RESIDENT, content: 'Thank you ✓' }])
  })

  it('pages by older_than as Notify does: 250 newest first, then the rest, then none', async () => {
    for (let i = 0; i < 260; i++) {
      await receiveText(w.t.db, sealer, { provider: 'twilio', ref: `SM${i}`, from: RESIDENT, to: INBOUND_NUMBER, body: `reply ${i}` })
    }
    const client = new NotifyClient(w.url, w.keys.normal)
    const first = (await client.getReceivedTexts()).data
    expect(first.received_text_messages).toHaveLength(250)
    expect(first.received_text_messages[0].content).toBe('reply 259')
    expect(first.received_text_messages[249].content).toBe('reply 10')
    const last = first.received_text_messages[249].id
    expect(first.links.next).toBe(`${w.url}/v2/received-text-messages?older_than=${last}`)
    const second = (await client.getReceivedTexts(last)).data
    expect(second.received_text_messages.map((t: { content: string }) => t.content)).toEqual(Array.from({ length: 10 }, (_, i) => `reply ${9 - i}`))
    const third = (await client.getReceivedTexts(second.received_text_messages[9].id)).data
    expect(third).toEqual({ received_text_messages: [], links: { current: `${w.url}/v2/received-text-messages` } })
  })

  it("lists only the caller's service's texts, and refuses a bad query in Notify's format", async () => {
    const other = await createService(w.t.db, { name: 'Other' })
    await setInboundNumber(w.t.db, other.id, '+12125550001')
    await reply(iw, RESIDENT, 'to the other service', { to: '+12125550001' })
    expect((await new NotifyClient(w.url, w.keys.normal).getReceivedTexts()).data.received_text_messages).toEqual([])
    const bad = await callApi(w, 'GET', '/v2/received-text-messages?older_than=nope&page=2')
    expect(bad.status).toBe(400)
    expect(await bad.json()).toEqual({ status_code: 400, errors: [
      { error: 'ValidationError', message: 'Additional properties are not allowed (page was unexpected)' },
      { error: 'ValidationError', message: 'older_than is not a valid UUID' }] })
  })

  it('refuses a bad signature or token with 403 and stores nothing', async () => {
    const urls = inboundUrls(iw.publicUrl, SECRET)
    const params = { MessageSid: 'SMforged', From: RESIDENT, To: INBOUND_NUMBER, Body: 'STOP' }
    const forged = await fetch(urls.twilio, { method: 'POST', body: new URLSearchParams(params),
      headers: { 'content-type': 'application/x-www-form-urlencoded', 'x-twilio-signature': twilioSignature('not-the-token', urls.twilio, params) } })
    expect(forged.status).toBe(403)
    expect(await forged.json()).toEqual({ status_code: 403, errors: [{ error: 'AuthError', message: 'Invalid X-Twilio-Signature' }] })
    // Signed for other fields than those posted.
    const moved = await fetch(urls.twilio, { method: 'POST', body: new URLSearchParams({ ...params, From: '+12125550999' }),
      headers: { 'content-type': 'application/x-www-form-urlencoded', 'x-twilio-signature': twilioSignature('token', urls.twilio, params) } })
    expect(moved.status).toBe(403)
    const vonage = await fetch(`${iw.publicUrl}/inbound/vonage/${'0'.repeat(32)}`, { method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ msisdn: '12125550123', to: '12125550000', messageId: 'X1', text: 'STOP', type: 'text' }) })
    expect(vonage.status).toBe(403)
    // A sandbox with another account's auth token signs what Herald cannot verify.
    await iw.twilio.close()
    iw.twilio = await startSmsSandbox({ provider: 'twilio', accountSid: 'ACtest', authToken: 'another-token', inboundUrl: urls.twilio })
    expect(await reply(iw, RESIDENT, 'STOP')).toMatchObject({ status: 403 })
    expect(await stored()).toEqual([])
    expect(await w.t.db.query('SELECT * FROM sms_opt_outs')).toEqual([])
  })

  it('stores a webhook posted again once, and drops a text to a number no service has', async () => {
    const urls = inboundUrls(iw.publicUrl, SECRET)
    const params = { MessageSid: 'SMsame', From: RESIDENT, To: INBOUND_NUMBER, Body: 'hello' }
    const post = () => fetch(urls.twilio, { method: 'POST', body: new URLSearchParams(params),
      headers: { 'content-type': 'application/x-www-form-urlencoded', 'x-twilio-signature': twilioSignature('token', urls.twilio, params) } })
    expect((await post()).status).toBe(200)
    const again = await post()
    expect([again.status, again.headers.get('content-type'), await again.text()]).toEqual([200, 'text/xml', '<?xml version="1.0" encoding="UTF-8"?><Response/>'])
    expect(await stored()).toHaveLength(1)
    expect(await reply(iw, RESIDENT, 'anyone there?', { to: '+12125559999' })).toMatchObject({ status: 200 })
    expect(await stored()).toHaveLength(1)
  })

  it("queues each text for the service's inbound callback, with Notify's callback body", async () => {
    await reply(iw, RESIDENT, 'before any callback')
    await w.t.db.query(`INSERT INTO service_callbacks (service_id, kind, url, token_ct) VALUES ($1, 'inbound_sms', 'https://example.org/inbound', $2)`,
      [w.service.id, sealer.seal('a-bearer-token')])
    await reply(iw, RESIDENT, 'after the callback')
    const rows = await stored()
    const queued = await w.t.db.query(`SELECT service_id::text, kind, subject_id::text FROM callback_queue`)
    expect(queued).toEqual([{ service_id: w.service.id, kind: 'inbound_sms', subject_id: rows[1].id }])
    expect(await inboundCallbackBody(w.t.db, sealer, rows[1].id)).toEqual({
      id: rows[1].id, source_number: RESIDENT, destination_number: INBOUND_NUMBER, message: 'after the callback',
      date_received: expect.stringMatching(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/),
    })
  })

  it("deletes received texts past the service's sms retention, keeping the newer", async () => {
    await setRetention(w.t.db, w.service.id, 3)
    await reply(iw, RESIDENT, 'old')
    await reply(iw, RESIDENT, 'new', { provider: 'vonage' })
    const [old] = await stored()
    await w.t.db.query(`UPDATE received_texts SET created_at = now() - interval '5 days' WHERE id = $1`, [old.id])
    const results = await runRetention(w.t.db, { store: new LocalStore(jobStore), log: createLogger('silent') })
    expect(results.find((r) => r.serviceId === w.service.id && r.type === 'sms')).toMatchObject({ received: 1 })
    expect((await new NotifyClient(w.url, w.keys.normal).getReceivedTexts()).data.received_text_messages).toMatchObject([{ content: 'new' }])
    expect(await inboundCallbackBody(w.t.db, sealer, old.id)).toBeNull()
  })

  it('gives a number to one service at a time, in E.164', async () => {
    const other = await createService(w.t.db, { name: 'Other' })
    await setInboundNumber(w.t.db, other.id, '1 (212) 555-0000')
    expect([await inboundNumbersOf(w.t.db, w.service.id), await inboundNumbersOf(w.t.db, other.id)]).toEqual([[], [INBOUND_NUMBER]])
    await expect(setInboundNumber(w.t.db, other.id, 'NYSDOH')).rejects.toThrow('E.164')
    expect(await removeInboundNumber(w.t.db, other.id, INBOUND_NUMBER)).toBe(true)
    expect(await inboundNumbersOf(w.t.db, other.id)).toEqual([])
  })
})
