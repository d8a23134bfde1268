/** The messaging API v2 through GOV.UK Notify's official Node client, unchanged, and raw HTTP for what the client cannot send. */
import { describe, expect, it } from 'vitest'
import { createSigner } from 'fast-jwt'
import notifyClient from 'notifications-node-client'
import { archiveTemplate, createKey, createService, revokeKey, addRecipient } from '../../src/messaging/services.ts'
import { startHttpServer } from '../../src/http/server.ts'
import { createLogger } from '../../src/log.ts'
import { messagingRoutes } from '../../src/messaging/index.ts'
import { onPostgres } from '../helpers/db.ts'
import { config, messagingWorld, sealer, secrets } from '../helpers/messaging.ts'

const { NotifyClient } = notifyClient as { NotifyClient: new (base: string, key: string) => any }
const w = messagingWorld()
const PHONE = '+1 212 555 0100'
const client = (key = w.keys.normal) => new NotifyClient(w.url, key)

/** What the client's axios rejects with: Notify's error body. */
async function failure(p: Promise<unknown>): Promise<{ status: number; errors: { error: string; message: string }[] }> {
  try {
    await p
  } catch (err) {
    const e = err as { response?: { status: number; data: { status_code: number; errors: { error: string; message: string }[] } } }
    if (!e.response) throw err
    expect(e.response.data.status_code).toBe(e.response.status)
    return { status: e.response.status, errors: e.response.data.errors }
  }
  throw new Error('the request succeeded')
}

const token = async (iss: string, secret: string, iat = Math.floor(Date.now() / 1000)) =>
  createSigner({ key: secret, algorithm: 'HS256', clockTimestamp: iat * 1000 })({ iss })
const secretOf = (key: string) => key.slice(-36)
const get = (path: string, auth?: string) => fetch(`${w.url}${path}`, { headers: auth === undefined ? {} : { authorization: auth } })

describe('the official client, end to end', () => {
  it('sends a text, then reads it by id, in the list, by reference and status; reads and previews the template', async () => {
    const notify = client()
    const sent = (await notify.sendSms(w.template.id, PHONE, { personalisation: { name: 'Ada', ref: 'X1' }, reference: 'case-17' })).data
    expect(sent).toMatchObject({
      reference: 'case-17', scheduled_for: null,
      content: { body: 'Hello Ada, your test result is ready. Ref X1.', from_number: 'NYSDOH' },
      template: { id: w.template.id, version: 1 },
    })
    expect(sent.uri).toBe(`${w.url}/v2/notifications/${sent.id}`)

    const got = (await notify.getNotificationById(sent.id)).data
    expect(got).toMatchObject({
      id: sent.id, reference: 'case-17', phone_number: PHONE, type: 'sms', status: 'created',
      body: 'Hello Ada, your test result is ready. Ref X1.', template: { id: w.template.id, version: 1 }, email_address: null, sent_at: null,
    })
    expect(got.created_at).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/)

    const list = (await notify.getNotifications()).data
    expect(list.notifications.map((n: { id: string }) => n.id)).toEqual([sent.id])
    expect(list.links.next).toContain(`older_than=${sent.id}`)
    expect((await notify.getNotifications('sms', 'created', 'case-17')).data.notifications).toHaveLength(1)
    expect((await notify.getNotifications(undefined, 'failed')).data.notifications).toHaveLength(0)
    expect((await notify.getNotifications(undefined, undefined, 'other-ref')).data.notifications).toHaveLength(0)

    const template = (await notify.getTemplateById(w.template.id)).data
    expect(template).toMatchObject({ id: w.template.id, type: 'sms', version: 1, name: 'Result ready', body: 'Hello ((name)), your test result is ready. Ref ((ref)).',
      personalisation: { name: { required: true }, ref: { required: true } }, subject: null })
    expect((await notify.getTemplateByIdAndVersion(w.template.id, 1)).data.version).toBe(1)
    expect((await notify.getAllTemplates('sms')).data.templates).toHaveLength(1)
    const preview = (await notify.previewTemplateById(w.template.id, { name: 'Bo', ref: 'Y' })).data
    expect(preview).toEqual({ id: w.template.id, type: 'sms', version: 1, body: 'Hello Bo, your test result is ready. Ref Y.', html: null, subject: null, postage: null })
  })

  it('keeps no plaintext number or personalisation: the row holds a keyed hash and ciphertexts that open to them', async () => {
    const sent = (await client().sendSms(w.template.id, PHONE, { personalisation: { name: 'Ada', ref: 'X1' } })).data
    const [row] = await w.t.db.query('SELECT * FROM notifications WHERE id = $1', [sent.id])
    // Every column as text, byte columns as their raw bytes: no number in any form, no name.
    const stored = Object.values(row).map((v) => (Buffer.isBuffer(v) || v instanceof Uint8Array ? Buffer.from(v).toString('latin1') : String(v))).join('|')
    for (const plain of ['2125550100', '212 555 0100', 'Ada']) expect(stored).not.toContain(plain)
    expect(Buffer.from(row.recipient_hash).equals(sealer.hash('+12125550100'))).toBe(true)
    expect(sealer.open(Buffer.from(row.recipient_ct))).toBe(PHONE)
    expect(JSON.parse(sealer.open(Buffer.from(row.personalisation_ct)))).toEqual({ name: 'Ada', ref: 'X1' })
  })

  it('pages the list 250 at a time along links.next', async () => {
    const notify = client()
    for (let i = 0; i < 26; i++) {
      await Promise.all(Array.from({ length: 10 }, () => notify.sendSms(w.template.id, PHONE, { personalisation: { name: 'A', ref: String(i) } })))
    }
    const first = (await notify.getNotifications()).data
    expect(first.notifications).toHaveLength(250)
    const olderThan = new URL(first.links.next).searchParams.get('older_than')
    const second = (await notify.getNotifications(undefined, undefined, undefined, olderThan)).data
    expect(second.notifications).toHaveLength(10)
    const ids = new Set([...first.notifications, ...second.notifications].map((n: { id: string }) => n.id))
    expect(ids.size).toBe(260)
  })
})

describe('the OpenAPI document', () => {
  it('is served without auth and names every route', async () => {
    const doc = await (await fetch(`${w.url}/v2/openapi.json`)).json()
    expect(doc.openapi).toBe('3.0.3')
    expect(Object.keys(doc.paths)).toEqual(expect.arrayContaining(['/v2/notifications/sms', '/v2/notifications/{notification_id}', '/v2/notifications',
      '/v2/template/{template_id}', '/v2/template/{template_id}/preview', '/v2/notifications/email', '/v2/received-text-messages']))
  })
})

describe('auth, as GOV.UK Notify answers it', () => {
  it('no token and a wrong scheme: 401', async () => {
    for (const [auth, message] of [[undefined, 'Unauthorized: authentication token must be provided'], ['Basic abc', 'Unauthorized: authentication bearer scheme must be used']]) {
      const res = await get('/v2/notifications', auth)
      expect(res.status).toBe(401)
      expect(await res.json()).toEqual({ status_code: 401, errors: [{ error: 'AuthError', message }] })
    }
  })

  it('a bad signature, a stale iat, a revoked key, another service\'s key, an unknown service: 403 with Notify\'s messages', async () => {
    const other = await createService(w.t.db, { name: 'Other' })
    const otherKey = (await createKey(w.t.db, secrets, other.id, 'live', 'normal')).key
    const cases: [string, string][] = [
      [await token(w.service.id, '00000000-0000-4000-8000-000000000000'), 'Invalid token: API key not found'],
      [await token(w.service.id, secretOf(w.keys.normal), Math.floor(Date.now() / 1000) - 45), 'Error: Your system clock must be accurate to within 30 seconds'],
      [await token(w.service.id, secretOf(otherKey)), 'Invalid token: API key not found'],
      [await token('5bd2ab3a-4fa5-4a6c-9d52-bb4b7f4d6c38', secretOf(w.keys.normal)), 'Invalid token: service not found'],
      [await token('not-a-uuid', secretOf(w.keys.normal)), 'Invalid token: service id is not the right data type'],
      ['garbage', 'Invalid token: make sure your API token matches the example at https://docs.notifications.service.gov.uk/rest-api.html#authorisation-header'],
    ]
    for (const [jwt, message] of cases) {
      const res = await get('/v2/notifications', `Bearer ${jwt}`)
      expect({ status: res.status, body: await res.json() }).toEqual({ status: 403, body: { status_code: 403, errors: [{ error: 'AuthError', message }] } })
    }
    expect(await revokeKey(w.t.db, w.service.id, 'live')).toBe(1)
    expect(await failure(client().getNotifications())).toEqual({ status: 403, errors: [{ error: 'AuthError', message: 'Invalid token: API key revoked' }] })
    // The service's other keys still work.
    expect((await client(w.keys.team).getNotifications()).status).toBe(200)
  })
})

describe('keys of each type', () => {
  it('a team key texts team members and the guest list only; a live key anyone; a test key anyone', async () => {
    const teamOnly = 'Can’t send to this recipient using a team-only API key'
    expect(await failure(client(w.keys.team).sendSms(w.template.id, PHONE, { personalisation: { name: 'A', ref: 'B' } })))
      .toEqual({ status: 400, errors: [{ error: 'BadRequestError', message: teamOnly }] })
    await addRecipient(w.t.db, sealer, w.service.id, '+12125550100', 'member', 'Tess')
    await addRecipient(w.t.db, sealer, w.service.id, '+12125550101', 'guest')
    for (const n of ['212-555-0100', '(212) 555-0101']) expect((await client(w.keys.team).sendSms(w.template.id, n, { personalisation: { name: 'A', ref: 'B' } })).status).toBe(201)
    expect((await client(w.keys.test).sendSms(w.template.id, '+1 212 555 0199', { personalisation: { name: 'A', ref: 'B' } })).status).toBe(201)
    const [{ key_types }] = await w.t.db.query(`SELECT array_agg(key_type ORDER BY key_type) AS key_types FROM notifications`)
    expect(key_types).toEqual(['team', 'team', 'test'])
    // Each key type sees its own in the list, as in Notify.
    expect((await client(w.keys.test).getNotifications()).data.notifications).toHaveLength(1)
  })

  it('a restricted (trial) service: live keys too text the team only', async () => {
    await w.t.db.query('UPDATE services SET restricted = true WHERE id = $1', [w.service.id])
    expect((await failure(client().sendSms(w.template.id, PHONE, { personalisation: { name: 'A', ref: 'B' } }))).errors[0].message)
      .toBe('Can’t send to this recipient when service is in trial mode – see https://www.notifications.service.gov.uk/trial-mode')
  })
})

describe('validation, with Notify\'s errors', () => {
  const send = (phone: string, personalisation: object = { name: 'A', ref: 'B' }, templateId = w.template.id) => failure(client().sendSms(templateId, phone, { personalisation }))

  it('phone numbers', async () => {
    expect(await send('12')).toEqual({ status: 400, errors: [{ error: 'ValidationError', message: 'phone_number Not enough digits' }] })
    expect((await send('+1 212 555 0100 9999')).errors[0].message).toBe('phone_number Too many digits')
    expect((await send('212-555-CALL')).errors[0].message).toBe('phone_number Must not contain letters or symbols')
    expect((await send('+1 555 123 4567')).errors[0].message).toBe('phone_number Number is not valid – double check the phone number you entered')
    expect(await send('+44 7911 123456')).toEqual({ status: 400, errors: [{ error: 'BadRequestError', message: 'Cannot send to international mobile numbers' }] })
    await w.t.db.query('UPDATE services SET international = true WHERE id = $1', [w.service.id])
    const sent = await client().sendSms(w.template.id, '+44 7911 123456', { personalisation: { name: 'A', ref: 'B' } })
    const [row] = await w.t.db.query('SELECT international FROM notifications WHERE id = $1', [sent.data.id])
    expect(row.international).toBe(true)
  })

  it('personalisation missing, a message too long, an unknown or archived template, a malformed request', async () => {
    expect(await send(PHONE, { name: 'A' })).toEqual({ status: 400, errors: [{ error: 'BadRequestError', message: 'Missing personalisation: ref' }] })
    expect((await send(PHONE, {})).errors[0].message).toBe('Missing personalisation: name, ref')
    expect((await send(PHONE, { name: 'x'.repeat(900), ref: 'B' })).errors[0].message)
      .toBe('Your message is too long. Text messages cannot be longer than 918 characters. Your message is 941 characters long.')
    expect((await send(PHONE, {}, '3f0c3c53-2f53-4b8e-8c4c-5d5d0a7f3f11')).errors[0]).toEqual({ error: 'BadRequestError', message: 'Template not found' })
    await archiveTemplate(w.t.db, w.template.id)
    expect((await send(PHONE)).errors[0]).toEqual({ error: 'BadRequestError', message: 'Template has been deleted' })
    const raw = await fetch(`${w.url}/v2/notifications/sms`, {
      method: 'POST', headers: { authorization: `Bearer ${await token(w.service.id, secretOf(w.keys.normal))}`, 'content-type': 'application/json' },
      body: JSON.stringify({ template_id: 'nope', colour: 'red' }),
    })
    expect(raw.status).toBe(400)
    expect((await raw.json()).errors.map((e: { message: string }) => e.message)).toEqual([
      'phone_number is a required property', 'Additional properties are not allowed (colour was unexpected)', 'template_id is not a valid UUID'])
    expect((await failure(client().getNotificationById('0'))).errors[0]).toEqual({ error: 'ValidationError', message: 'notification_id is not a valid UUID' })
    expect(await failure(client().getNotificationById('3f0c3c53-2f53-4b8e-8c4c-5d5d0a7f3f11'))).toEqual({ status: 404, errors: [{ error: 'NoResultFound', message: 'No result found' }] })
    expect((await failure(client().getNotifications(undefined, 'elephant'))).errors[0].message).toMatch(/^status elephant is not one of \[cancelled, created,/)
  })
})

describe('limits', () => {
  it('the per-minute rate limit answers RateLimitError, per key type; the daily limit TooManyRequestsError', async () => {
    await w.t.db.query('UPDATE services SET rate_limit = 3, message_limit = 4 WHERE id = $1', [w.service.id])
    const p = { personalisation: { name: 'A', ref: 'B' } }
    const live = await Promise.allSettled(Array.from({ length: 5 }, () => client().sendSms(w.template.id, PHONE, p)))
    expect(live.filter((r) => r.status === 'fulfilled')).toHaveLength(3)
    const refused = live.find((r) => r.status === 'rejected') as PromiseRejectedResult
    expect(await failure(Promise.reject(refused.reason))).toEqual({ status: 429, errors: [{ error: 'RateLimitError', message: 'Exceeded rate limit for key type LIVE of 3 requests per 60 seconds' }] })
    // Test keys have a bucket of their own and do not count toward the daily limit.
    await addRecipient(w.t.db, sealer, w.service.id, '+12125550100', 'member')
    expect((await client(w.keys.team).sendSms(w.template.id, PHONE, p)).status).toBe(201) // the 4th text today
    expect(await failure(client(w.keys.team).sendSms(w.template.id, PHONE, p)))
      .toEqual({ status: 429, errors: [{ error: 'TooManyRequestsError', message: 'Exceeded send limits (sms: 4) for today' }] })
    expect((await client(w.keys.test).sendSms(w.template.id, PHONE, p)).status).toBe(201)
  })
})

describe.skipIf(!onPostgres)('limits across API processes', () => {
  it('two API servers on their own connections to one database admit exactly the rate limit between them', async () => {
    await w.t.db.query('UPDATE services SET rate_limit = 10 WHERE id = $1', [w.service.id])
    const other = w.t.connectAgain()
    const second = await startHttpServer('127.0.0.1', 0, [messagingRoutes(config, other, createLogger('silent'))])
    try {
      const a = second.server.address()
      const urls = [w.url, `http://127.0.0.1:${typeof a === 'object' && a ? a.port : 0}`]
      const results = await Promise.allSettled(Array.from({ length: 30 }, (_, i) =>
        new NotifyClient(urls[i % 2], w.keys.normal).sendSms(w.template.id, PHONE, { personalisation: { name: 'A', ref: String(i) } })))
      expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(10)
      const [{ n }] = await w.t.db.query('SELECT count(*)::int AS n FROM notifications')
      expect(n).toBe(10)
    } finally {
      await second.close()
    }
  })
})
