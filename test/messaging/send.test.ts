/** Sending: the send engine hands texts to two SMS sandboxes (Twilio's and Vonage's APIs) through the real adapters, fails over, and receipts come back. */
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import { until } from '../helpers/wait.ts'
import type { FastifyInstance } from 'fastify'
import { Writable } from 'node:stream'
import notifyClient from 'notifications-node-client'
import { serveAtOwnUrl } from '../helpers/http.ts'
import { createLogger } from '../../src/log.ts'
import { receiptsEngine } from '../../src/messaging/receipts/engine.ts'
import { receiptRoutes, receiptUrls } from '../../src/messaging/receipts/routes.ts'
import { sendEngine, simulatedStatus } from '../../src/messaging/send/engine.ts'
import type { SmsProvider } from '../../src/messaging/send/provider.ts'
import { sendQueue } from '../../src/messaging/send/queue.ts'
import { retry, stats } from '../../src/engine/queue.ts'
import type { Db } from '../../src/db/types.ts'
import { setTimeout as sleep } from 'node:timers/promises'
import { TwilioSms } from '../../src/messaging/send/twilio.ts'
import { VonageSms } from '../../src/messaging/send/vonage.ts'
import { createTemplate } from '../../src/messaging/services.ts'
import type { SmsSandbox } from '../../src/sandbox/sms/server.ts'
import { SECRET } from '../helpers/exposure.ts'
import { messagingWorld, sealer, smsProviders } from '../helpers/messaging.ts'

const { NotifyClient } = notifyClient as { NotifyClient: new (base: string, key: string) => any }
const w = messagingWorld()
// Everything the engines and receipt routes log in this file, scanned for numbers and names at the end.
let captured = ''
const log = createLogger('debug', new Writable({ write(chunk, _e, done) { captured += chunk; done() } }))
let receiptsApp: FastifyInstance
let publicUrl: string
let twilio: SmsSandbox
let vonage: SmsSandbox
let providers: (TwilioSms | VonageSms)[]

beforeAll(async () => {
  ;({ url: publicUrl, app: receiptsApp } = await serveAtOwnUrl((url) => [
    receiptRoutes({ db: w.t.db, log, publicUrl: url, secret: SECRET, twilioAuthToken: 'token' })]))
})
afterAll(async () => receiptsApp.close())
let sms: Awaited<ReturnType<typeof smsProviders>>
beforeEach(async () => {
  sms = await smsProviders(w.t.db, publicUrl, 2000)
  ;({ twilio, vonage, providers } = sms)
})
afterEach(async () => sms.close())

const send = () => sendEngine({ providers, sealer, region: 'US', concurrency: 8, recoverySeconds: 300, log, workerId: 'test' })
const step = (e = send()) => e.step(w.t.db, new AbortController().signal)
const applyReceipts = () => receiptsEngine(log).step(w.t.db, new AbortController().signal)
const text = (phone: string, key = w.keys.normal, personalisation: object = { name: 'Ada', ref: 'X' }, templateId = w.template.id) =>
  new NotifyClient(w.url, key).sendSms(templateId, phone, { personalisation }).then((r: { data: { id: string } }) => r.data.id)
const status = async (id: string) => (await w.t.db.query('SELECT status FROM notifications WHERE id = $1', [id]))[0].status

describe('send', () => {
  it('hands a text to the first provider, then its receipts (sent, delivered) make it delivered, as the official client reads it', async () => {
    const id = await text('+1 212 555 0100')
    expect(await step()).toEqual({ sending: 1 })
    expect(twilio.ledger.map((e) => [e.to, e.from, e.body])).toEqual([['+12125550100', 'NYSDOH', 'Hello Ada, your test result is ready. Ref X.']])
    await until(() => twilio.stats.callbacksSent === 2)
    expect(await applyReceipts()).toEqual({ applied: 2 })
    const got = (await new NotifyClient(w.url, w.keys.normal).getNotificationById(id)).data
    expect(got).toMatchObject({ status: 'delivered', cost_details: { billable_sms_fragments: 1 } })
    expect(got.sent_at).not.toBeNull()
    expect(got.completed_at).not.toBeNull()
    const [row] = await w.t.db.query('SELECT provider, provider_ref FROM notifications WHERE id = $1', [id])
    expect(row).toEqual({ provider: 'twilio', provider_ref: twilio.ledger[0].id })
  })

  it('fails over to the next provider when one fails, pushes the failing one down, and lets it drift back', async () => {
    twilio.knobs.failureRate = 1
    const ids = [await text('+1 212 555 0100'), await text('+1 212 555 0101')]
    await step()
    expect(twilio.ledger).toHaveLength(0)
    expect(vonage.ledger.map((e) => e.to).sort()).toEqual(['12125550100', '12125550101'])
    await until(() => vonage.stats.callbacksSent === 2)
    await applyReceipts()
    expect(await Promise.all(ids.map(status))).toEqual(['delivered', 'delivered'])
    const order = async () => (await w.t.db.query(`SELECT name FROM sms_providers ORDER BY priority + penalty * power(0.5, extract(epoch FROM now() - coalesce(penalised_at, now())) / 300), priority`)).map((r) => r.name)
    expect(await order()).toEqual(['vonage', 'twilio'])
    // Twilio recovers: the next texts go to Vonage first (no more failed calls), until the penalty fades.
    twilio.knobs.failureRate = 0
    await text('+1 212 555 0102')
    await step()
    expect(twilio.stats.requests).toBe(2)
    await w.t.db.query(`UPDATE sms_providers SET penalised_at = now() - interval '1 hour'`)
    expect(await order()).toEqual(['twilio', 'vonage'])
    await text('+1 212 555 0103')
    await step()
    expect(twilio.ledger.map((e) => e.to)).toEqual(['+12125550103'])
  })

  it('every provider down: the text waits and is tried again, not lost', async () => {
    twilio.knobs.failureRate = 1
    vonage.knobs.failureRate = 1
    const id = await text('+1 212 555 0100')
    await step()
    const [row] = await w.t.db.query('SELECT status, retry_at > now() AS waits, attempts FROM notifications WHERE id = $1', [id])
    expect(row).toEqual({ status: 'created', waits: true, attempts: 1 })
    twilio.knobs.failureRate = 0
    await w.t.db.query('UPDATE notifications SET retry_at = now()')
    await step()
    expect(twilio.ledger).toHaveLength(1)
  })

  it('fragments: GSM-7 up to 160 in one, then 153 a fragment; one character outside GSM-7 makes it UCS-2 (70, then 67)', async () => {
    const t = await createTemplate(w.t.db, w.service.id, 'raw', '((text))', 'tester')
    const cases: [string, number][] = [['a'.repeat(160), 1], ['a'.repeat(161), 2], ['{'.repeat(80), 1], ['{'.repeat(81), 2], ['ł'.repeat(70), 1], ['ł'.repeat(71), 2], ['a'.repeat(306), 2], ['a'.repeat(307), 3]]
    const ids = []
    for (const [body] of cases) ids.push(await text('+1 212 555 0100', w.keys.normal, { text: body }, t.id))
    await step()
    const units = await w.t.db.query('SELECT id, billable_units FROM notifications')
    const byId = new Map(units.map((r) => [r.id, r.billable_units]))
    expect(ids.map((id) => byId.get(id))).toEqual(cases.map(([, n]) => n))
  })

  it('test keys never reach a provider: their outcome is simulated by number', async () => {
    const ids = [await text('+1 212 555 0100', w.keys.test), await text('+1 212 555 0002', w.keys.test), await text('+1 212 555 0003', w.keys.test)]
    await step()
    expect(twilio.stats.requests + vonage.stats.requests).toBe(0)
    expect(await Promise.all(ids.map(status))).toEqual(['delivered', 'permanent-failure', 'temporary-failure'])
    expect(simulatedStatus('+12125550102')).toBe('delivered')
  })

  it('a number the provider refuses fails for good at once; failures by receipt are mapped per provider', async () => {
    const refused = await text('+1 212 555 7300')
    const permanent = await text('+1 212 555 7000')
    const temporary = await text('+1 212 555 7100')
    await step()
    expect(await status(refused)).toBe('permanent-failure')
    await until(() => twilio.stats.callbacksSent === 4)
    await applyReceipts()
    expect([await status(permanent), await status(temporary)]).toEqual(['permanent-failure', 'temporary-failure'])
  })
})

describe('send under the work queue', () => {
  /** A database on which the 72-hour sweep finds nothing, as when it ran a moment before. */
  const stalledSweep = (db: Db): Db => new Proxy(db, {
    get(target, prop) {
      if (prop !== 'query') return Reflect.get(target, prop, target)
      return (sql: string, params?: unknown[]) => (sql.includes('RETURNING status') ? Promise.resolve([]) : target.query(sql, params))
    },
  })
  /** Twilio through a provider slower than the lease. */
  const slow = (ms: number): SmsProvider => ({
    name: 'twilio', close: async () => {}, send: async (sms) => { await sleep(ms); return providers[0].send(sms) },
  })

  it('a lease that runs out while a text waits its turn: the text goes back unsent; another worker takes only texts still due; none is sent twice', async () => {
    const ids: string[] = []
    for (let i = 0; i < 4; i++) ids.push(await text(`+1 212 555 01${String(i).padStart(2, '0')}`))
    // Worker A: 2 calls at once, each 1.5 s, 1-second leases. It holds two texts in calls and the next one
    // claimed (already `sending`, so no other worker can take it) whose lease runs out before its turn.
    const a = sendEngine({ providers: [slow(1500)], sealer, region: 'US', concurrency: 2, recoverySeconds: 300, log, workerId: 'A', leaseSeconds: 1 })
    const roundA = a.step(w.t.db, new AbortController().signal)
    await sleep(1200) // every lease of A has run out; its two calls are under way
    const b = sendEngine({ providers, sealer, region: 'US', concurrency: 8, recoverySeconds: 300, log, workerId: 'B', leaseSeconds: 30 })
    // B can take neither A's texts in calls nor the one A holds unstarted: only the fourth, still `created`.
    expect(await b.step(w.t.db, new AbortController().signal)).toEqual({ sending: 1 })
    // A sends its two, and gives back the text whose lease ran out, offered to no provider: due again, no attempt spent.
    expect(await roundA).toEqual({ sending: 2 })
    expect(captured).toContain('send gave back texts whose claim ran out before their turn')
    expect(await b.step(w.t.db, new AbortController().signal)).toEqual({ sending: 1 })
    const handed = twilio.ledger.map((e) => e.to)
    expect(handed).toHaveLength(4)
    expect(new Set(handed).size).toBe(4)
    const rows = await w.t.db.query(`SELECT status, provider_ref IS NOT NULL AS ref, claimed_by, attempts FROM notifications WHERE id = ANY($1::uuid[])`, [ids])
    expect(rows.every((r) => r.status === 'sending' && r.ref && r.claimed_by === null && r.attempts === 0)).toBe(true)
  })

  it('keeps `concurrency` calls in flight while texts are due, a claim and a write never between them: each text once', async () => {
    for (let i = 0; i < 12; i++) await text(`+1 212 555 01${String(i).padStart(2, '0')}`)
    let inFlight = 0
    let most = 0
    const counting: SmsProvider = {
      name: 'twilio', close: async () => {},
      send: async (sms) => {
        most = Math.max(most, ++inFlight)
        try {
          await sleep(800)
          return await providers[0].send(sms)
        } finally {
          inFlight--
        }
      },
    }
    const e = sendEngine({ providers: [counting], sealer, region: 'US', concurrency: 4, recoverySeconds: 300, log, workerId: 'A' })
    expect(await e.step(w.t.db, new AbortController().signal)).toEqual({ sending: 12 })
    expect(most).toBe(4)
    expect(new Set(twilio.ledger.map((x) => x.to)).size).toBe(12)
  })

  it('a job cancelled meanwhile: texts not yet claimed are cancelled and never sent; a claimed one is already sending and is sent once', async () => {
    const first = await text('+1 212 555 0100')
    const second = await text('+1 212 555 0101')
    const a = sendEngine({ providers: [slow(0)], sealer, region: 'US', concurrency: 1, recoverySeconds: 300, log, workerId: 'A' })
    let cancelled = false
    const db = new Proxy(w.t.db, {
      get(target, prop) {
        if (prop !== 'query') return Reflect.get(target, prop, target)
        return async (sql: string, params?: unknown[]) => {
          const rows = await target.query(sql, params)
          // Right after the first claim, the texts are cancelled as a job's cancel does it (those still `created`).
          if (sql.includes('WITH picked') && !cancelled) {
            cancelled = true
            await target.query(`UPDATE notifications SET status = 'cancelled' WHERE status = 'created'`)
          }
          return rows
        }
      },
    })
    expect(await a.step(db, new AbortController().signal)).toEqual({ sending: 1 })
    expect(twilio.ledger.map((e) => e.to)).toEqual(['+12125550100'])
    expect([await status(first), await status(second)]).toEqual(['sending', 'cancelled'])
  })

  it('stops when asked: calls under way end and are recorded, texts claimed and not started go back, untouched', async () => {
    for (let i = 0; i < 8; i++) await text(`+1 212 555 01${String(i).padStart(2, '0')}`)
    const stop = new AbortController()
    let calls = 0
    // Stopped as the second call starts: by then the next text is being claimed.
    const stopping: SmsProvider = { name: 'twilio', close: async () => {}, send: async (sms) => {
      if (++calls === 2) stop.abort()
      await sleep(300)
      return providers[0].send(sms)
    } }
    const a = sendEngine({ providers: [stopping], sealer, region: 'US', concurrency: 2, recoverySeconds: 300, log, workerId: 'A' })
    const round = a.step(w.t.db, stop.signal)
    // Two in calls; the next one claimed (held) meanwhile goes back.
    expect(await round).toEqual({ sending: 2, released: 1 })
    const [r] = await w.t.db.query(`SELECT count(*) FILTER (WHERE status = 'created' AND claimed_by IS NULL AND attempts = 0)::int AS back,
      count(*) FILTER (WHERE status = 'sending')::int AS sending FROM notifications`)
    expect(r).toEqual({ back: 6, sending: 2 })
    expect(twilio.ledger).toHaveLength(2)
  })

  it('a text that cannot be read fails alone, with its reason; the rest of its chunk is sent and recorded', async () => {
    const ids = [await text('+1 212 555 0100'), await text('+1 212 555 0101'), await text('+1 212 555 0102')]
    await w.t.db.query(`UPDATE notifications SET recipient_ct = '\\x00' WHERE id = $1`, [ids[1]])
    expect(await step()).toEqual({ sending: 2, 'technical-failure': 1 })
    expect(twilio.ledger.map((e) => e.to).sort()).toEqual(['+12125550100', '+12125550102'])
    const rows = await w.t.db.query(`SELECT id, status, provider_ref IS NOT NULL AS ref, last_error FROM notifications`)
    const byId = new Map(rows.map((r) => [r.id, r]))
    expect(byId.get(ids[1])).toMatchObject({ status: 'technical-failure', ref: false, last_error: expect.stringMatching(/^could not be prepared: /) })
    expect(byId.get(ids[0])).toMatchObject({ status: 'sending', ref: true })
  })

  it('a text past 72 hours is never handed over: it fails for good, and a retry cannot send it', async () => {
    const id = await text('+1 212 555 0100')
    await w.t.db.query(`UPDATE notifications SET created_at = now() - interval '73 hours'`)
    // Claimed before the sweep saw it (the sweep runs once a minute): still not sent.
    expect(await send().step(stalledSweep(w.t.db), new AbortController().signal)).toEqual({ 'technical-failure': 1 })
    expect(twilio.ledger).toHaveLength(0)
    expect(await retry(w.t.db, sendQueue, [id])).toEqual([id])
    expect(await send().step(stalledSweep(w.t.db), new AbortController().signal)).toEqual({ 'technical-failure': 1 })
    expect(twilio.ledger).toHaveLength(0)
    expect((await w.t.db.query('SELECT last_error FROM notifications'))[0].last_error).toBe('not sent within 72 hours')
  })

  it('the 72-hour sweep fails texts never handed over as the queue does: visible, with the reason', async () => {
    await text('+1 212 555 0100')
    await w.t.db.query(`UPDATE notifications SET created_at = now() - interval '73 hours'`)
    expect(await step()).toEqual({})
    const [row] = await w.t.db.query('SELECT status, failed_at IS NOT NULL AS failed, last_error FROM notifications')
    expect(row).toEqual({ status: 'technical-failure', failed: true, last_error: 'not sent within 72 hours' })
    expect((await stats(w.t.db, sendQueue)).failed).toBe(1)
  })

  it('out of attempts: technical-failure, visible in the queue with its error', async () => {
    twilio.knobs.failureRate = 1
    vonage.knobs.failureRate = 1
    const id = await text('+1 212 555 0100')
    for (let i = 0; i < sendQueue.retry.maxAttempts; i++) {
      await w.t.db.query('UPDATE notifications SET retry_at = NULL')
      await step()
    }
    const [row] = await w.t.db.query('SELECT status, attempts, failed_at IS NOT NULL AS failed, last_error, completed_at IS NOT NULL AS done FROM notifications WHERE id = $1', [id])
    expect(row).toMatchObject({ status: 'technical-failure', attempts: sendQueue.retry.maxAttempts, failed: true, done: true })
    expect(row.last_error).toMatch(/no provider took it/)
    expect((await stats(w.t.db, sendQueue)).failed).toBe(1)
    expect(await retry(w.t.db, sendQueue, [id])).toEqual([id])
    expect(await status(id)).toBe('created')
  })
})

describe('receipts', () => {
  it('a receipt that outruns the recording of the send waits for it, then is checked against it and applied', async () => {
    twilio.knobs.latencyMs = 1200 // the answer comes 1.2 s after the text was accepted and its receipts sent (a busy machine needs the margin)
    const id = await text('+1 212 555 0100')
    const sending = step()
    await until(() => twilio.stats.callbacksSent === 2)
    // Twilio's reference is not recorded yet: the receipts wait (the queue's retry) instead of binding unchecked.
    expect(await applyReceipts()).toEqual({ applied: 0, waiting: 2 })
    expect(await status(id)).toBe('sending')
    await sending
    await w.t.db.query('UPDATE sms_receipts SET retry_at = now()')
    expect(await applyReceipts()).toEqual({ applied: 2 })
    const [row] = await w.t.db.query('SELECT status, provider, provider_ref FROM notifications WHERE id = $1', [id])
    expect(row).toEqual({ status: 'delivered', provider: 'twilio', provider_ref: twilio.ledger[0].id })
  })

  it('duplicates change nothing, a late pending does not undo delivered, an unknown one is counted, a forged one refused', async () => {
    twilio.knobs.failureRate = 1 // sent through Vonage, to the callback URL made for this text
    const id = await text('+1 212 555 0100')
    await step(send())
    await until(() => vonage.stats.callbacksSent === 1)
    expect(await applyReceipts()).toEqual({ applied: 1 })
    const post = (path: string, body: object) => fetch(path, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) })
    const urls = receiptUrls(publicUrl, SECRET)
    const messageId = vonage.ledger[0].id
    expect((await post(urls.vonage(id), { messageId, status: 'accepted', 'client-ref': id, 'err-code': '0' })).status).toBe(204)
    expect((await post(urls.vonage(id), { messageId, status: 'delivered', 'client-ref': id, 'err-code': '0' })).status).toBe(204)
    expect(await applyReceipts()).toEqual({ applied: 2 })
    expect(await status(id)).toBe('delivered')
    const unknown = '3f0c3c53-2f53-4b8e-8c4c-5d5d0a7f3f11'
    expect((await post(urls.vonage(unknown), { messageId: 'Y', status: 'delivered', 'client-ref': unknown })).status).toBe(204)
    expect(await applyReceipts()).toEqual({ applied: 0, waiting: 1 })
    for (let i = 0; i < 4; i++) {
      await w.t.db.query('UPDATE sms_receipts SET retry_at = now()')
      await applyReceipts()
    }
    const [r] = await w.t.db.query('SELECT count(*)::int AS n FROM sms_receipts WHERE failed_at IS NOT NULL')
    expect(r.n).toBe(1)
    const wrong = await post(`${publicUrl}/receipts/vonage/wrong-token`, { status: 'delivered', 'client-ref': id })
    expect(wrong.status).toBe(403)
    expect(await wrong.json()).toEqual({ status_code: 403, errors: [{ error: 'AuthError', message: 'Invalid callback token' }] })
    const forged = await fetch(`${publicUrl}/receipts/twilio?notification=${id}`, {
      method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded', 'x-twilio-signature': 'AAAA' }, body: 'MessageSid=SM1&MessageStatus=undelivered',
    })
    expect(forged.status).toBe(403)
    expect(await status(id)).toBe('delivered')
  })
})

describe('logs', () => {
  it('of everything above name no number and no personalisation', () => {
    expect(captured).toContain('texts handed to providers')
    expect(captured).toContain('SMS provider failed')
    for (const pii of ['2125550', '212 555', '555 0100', 'Ada', 'Hello']) expect(captured, pii).not.toContain(pii)
  })
})

describe('provider answers', () => {
  it('an accepted text whose answer cannot be read is not handed to another provider: it may be on its way', async () => {
    const { createServer } = await import('node:http')
    const server = createServer((_req, res) => res.writeHead(201, { 'content-type': 'application/json' }).end('{"sid": "SM'))
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
    const url = `http://127.0.0.1:${(server.address() as { port: number }).port}`
    const broken = new TwilioSms({ url, accountSid: 'ACtest', authToken: 'token', timeoutMs: 2000 })
    try {
      const id = await text('+1 212 555 0100')
      const e = sendEngine({ providers: [broken, providers[1]], sealer, region: 'US', concurrency: 8, recoverySeconds: 300, log, workerId: 'test' })
      expect(await e.step(w.t.db, new AbortController().signal)).toEqual({ sending: 1 })
      expect(vonage.ledger).toHaveLength(0)
      expect((await w.t.db.query('SELECT status, provider FROM notifications WHERE id = $1', [id]))[0]).toEqual({ status: 'sending', provider: 'twilio' })
    } finally {
      await broken.close()
      server.close()
    }
  })
})
