/**
 * Delivery-status callbacks: set by API and CLI, queued where the status changes (receipts engine, send
 * engine), POSTed by the callbacks engine to a real HTTP server in this test with GOV.UK Notify's body
 * and bearer header; retried on 5xx, 429, timeouts and connection errors (300 s apart, 5 times), failed
 * at once on other 4xx and listed; posted only under this worker's live claim.
 */
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import { until } from '../helpers/wait.ts'
import { createServer, type IncomingHttpHeaders, type Server, type ServerResponse } from 'node:http'
import type { FastifyInstance } from 'fastify'
import notifyClient from 'notifications-node-client'
import { serviceCallback } from '../../src/cli/messaging.ts'
import type { Db } from '../../src/db/types.ts'
import { events, failedRows, stats } from '../../src/engine/queue.ts'
import { queueOf } from '../../src/engine/queues.ts'
import { serveAtOwnUrl } from '../helpers/http.ts'
import { createLogger } from '../../src/log.ts'
import { notifyTime } from '../../src/messaging/api/present.ts'
import { CALLBACK_TIMEOUT_MS, callbacksEngine } from '../../src/messaging/callbacks/engine.ts'
import { callbackQueue } from '../../src/messaging/callbacks/queue.ts'
import { callbackFailures, listCallbacks, setCallback } from '../../src/messaging/callbacks/settings.ts'
import { receiptsEngine } from '../../src/messaging/receipts/engine.ts'
import { receiptRoutes, receiptUrls } from '../../src/messaging/receipts/routes.ts'
import { sendEngine } from '../../src/messaging/send/engine.ts'
import { registerProviders } from '../../src/messaging/send/providers.ts'
import { TwilioSms } from '../../src/messaging/send/twilio.ts'
import { createService } from '../../src/messaging/services.ts'
import { setInboundNumber } from '../../src/messaging/inbound/numbers.ts'
import { receiveText } from '../../src/messaging/inbound/receive.ts'
import { startSmsSandbox, type SmsSandbox } from '../../src/sandbox/sms/server.ts'
import { SECRET } from '../helpers/exposure.ts'
import { callApi, messagingWorld, sealer } from '../helpers/messaging.ts'

const { NotifyClient } = notifyClient as { NotifyClient: new (base: string, key: string) => any }
const w = messagingWorld()
const log = createLogger('silent')
const TOKEN = 'callback-bearer-token-42'
const go = () => new AbortController().signal

/** The service's own server: records each request; answers as told (a status, or never). */
interface Hook { url: string; requests: { headers: IncomingHttpHeaders; body: string }[]; answers: (number | 'hang')[]; close(): Promise<void> }
async function hookServer(): Promise<Hook> {
  const hanging: ServerResponse[] = []
  const hook = { requests: [], answers: [] } as unknown as Hook
  const server: Server = createServer((req, res) => {
    let body = ''
    req.on('data', (c) => (body += c))
    req.on('end', () => {
      hook.requests.push({ headers: req.headers, body })
      const a = hook.answers.shift() ?? 200
      if (a === 'hang') return void hanging.push(res)
      res.writeHead(a, { 'content-type': 'application/json' }).end('{"ok":true}')
    })
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  const a = server.address()
  hook.url = `http://127.0.0.1:${typeof a === 'object' && a ? a.port : 0}/notify/status`
  hook.close = async () => {
    for (const res of hanging) res.destroy()
    server.closeAllConnections()
    await new Promise((r) => server.close(r))
  }
  return hook
}

let receiptsApp: FastifyInstance
let publicUrl: string
let twilio: SmsSandbox
let provider: TwilioSms
let hook: Hook

beforeAll(async () => {
  ;({ url: publicUrl, app: receiptsApp } = await serveAtOwnUrl((url) => [
    receiptRoutes({ db: w.t.db, log, publicUrl: url, secret: SECRET, twilioAuthToken: 'token' })]))
})
afterAll(async () => receiptsApp.close())
beforeEach(async () => {
  twilio = await startSmsSandbox({ provider: 'twilio', accountSid: 'ACtest', authToken: 'token', seed: 1 })
  provider = new TwilioSms({ url: twilio.url, accountSid: 'ACtest', authToken: 'token', timeoutMs: 2000, callbackUrl: receiptUrls(publicUrl, SECRET).twilio })
  await registerProviders(w.t.db, ['twilio'])
  hook = await hookServer()
})
afterEach(async () => {
  await Promise.all([twilio.close(), provider.close(), hook.close()])
})

const sendStep = () => sendEngine({ providers: [provider], sealer, region: 'US', concurrency: 4, recoverySeconds: 300, log, workerId: 'test' }).step(w.t.db, go())
const applyReceipts = () => receiptsEngine(log).step(w.t.db, go())
const callbacks = (opts: { timeoutMs?: number; db?: Db } = {}) => callbacksEngine({ sealer, log, workerId: 'cb-test', timeoutMs: opts.timeoutMs }).step(opts.db ?? w.t.db, go())
const text = (phone: string, key = w.keys.normal, reference?: string) =>
  new NotifyClient(w.url, key).sendSms(w.template.id, phone, { personalisation: { name: 'Ada', ref: 'X' }, reference }).then((r: { data: { id: string } }) => r.data.id)
const queued = () => w.t.db.query(`SELECT id::text, kind, subject_id, status, attempts, retry_at, last_error, sent_at, failed_at FROM callback_queue ORDER BY id`)
const dueNow = () => w.t.db.query('UPDATE callback_queue SET retry_at = now() WHERE retry_at IS NOT NULL')
const setHook = (url = hook.url) => setCallback(w.t.db, sealer, w.service.id, 'delivery_status', url, TOKEN)

describe('delivery-status callbacks', () => {
  it('a text delivered through the SMS sandbox: the service’s server receives Notify’s callback body with its bearer token, once', async () => {
    const set = await callApi(w, 'POST', '/v2/service/callbacks', { kind: 'delivery_status', url: hook.url, bearer_token: TOKEN })
    expect(set.status).toBe(201)
    const id = await text('+1 212 555 0100', w.keys.normal, 'case-42')
    expect(await sendStep()).toEqual({ sending: 1 })
    expect(await queued()).toEqual([]) // sending: Notify calls back on final statuses only
    await until(() => twilio.stats.callbacksSent === 2, 10_000)
    expect(await applyReceipts()).toEqual({ applied: 2 })
    expect(await queued()).toMatchObject([{ kind: 'delivery_status', subject_id: id, status: 'delivered', sent_at: null }])
    expect(await callbacks()).toEqual({ sent: 1 })

    expect(hook.requests).toHaveLength(1)
    const [req] = hook.requests
    expect(req.headers.authorization).toBe(`Bearer ${TOKEN}`)
    expect(req.headers['content-type']).toBe('application/json')
    const [n] = await w.t.db.query('SELECT * FROM notifications WHERE id = $1', [id])
    expect(JSON.parse(req.body)).toEqual({
      id, reference: 'case-42', to: '+1 212 555 0100', status: 'delivered',
      created_at: notifyTime(n.created_at), completed_at: notifyTime(n.completed_at), sent_at: notifyTime(n.sent_at),
      notification_type: 'sms', template_id: w.template.id, template_version: 1,
    })
    for (const t of ['created_at', 'completed_at', 'sent_at']) expect(JSON.parse(req.body)[t]).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/)
    expect((await queued())[0].sent_at).not.toBeNull()
    expect(await callbacks()).toEqual({})
    // The number was opened for the call only: the queue keeps none.
    expect(JSON.stringify(await w.t.db.query('SELECT * FROM callback_queue'))).not.toMatch(/212\D?555\D?0100/) // (ids may hold any digits; the number may not)
    expect(CALLBACK_TIMEOUT_MS).toBe(5000)
  })

  it('test keys too (as Notify’s docs say), each simulated status; a service without a callback gets no row', async () => {
    const other = await createService(w.t.db, { name: 'No callbacks' })
    await setCallback(w.t.db, sealer, other.id, 'inbound_sms', hook.url, TOKEN) // a callback of the other kind only
    await text('+1 212 555 0100', w.keys.test)
    await sendStep()
    expect(await queued()).toEqual([])
    await setHook()
    const ids = [await text('+1 212 555 0101', w.keys.test), await text('+1 212 555 0002', w.keys.test)]
    await sendStep()
    expect((await queued()).map((r) => [r.subject_id, r.status]).sort()).toEqual([[ids[0], 'delivered'], [ids[1], 'permanent-failure']].sort())
    expect(await callbacks()).toEqual({ sent: 2 })
    expect(hook.requests.map((r) => JSON.parse(r.body)).map((b) => [b.id, b.status, b.to]).sort()).toEqual(
      [[ids[0], 'delivered', '+1 212 555 0101'], [ids[1], 'permanent-failure', '+1 212 555 0002']].sort())
  })

  it('a text never sent within 72 hours: technical-failure, and its callback', async () => {
    await setHook()
    const id = await text('+1 212 555 0100')
    await w.t.db.query(`UPDATE notifications SET created_at = now() - interval '73 hours'`)
    await sendStep()
    expect(await queued()).toMatchObject([{ subject_id: id, status: 'technical-failure' }])
    expect(await callbacks()).toEqual({ sent: 1 })
    expect(JSON.parse(hook.requests[0].body)).toMatchObject({ id, status: 'technical-failure' })
  })

  it('5xx and 429 are retried 300 s later, then sent', async () => {
    await setHook()
    await text('+1 212 555 0100', w.keys.test)
    await sendStep()
    hook.answers.push(503, 429)
    expect(await callbacks()).toEqual({ retrying: 1 })
    const [r] = await queued()
    expect(r).toMatchObject({ attempts: 1, last_error: 'answered HTTP 503', failed_at: null, sent_at: null })
    const wait = (new Date(r.retry_at).getTime() - Date.now()) / 1000
    expect(wait).toBeGreaterThan(295)
    expect(wait).toBeLessThanOrEqual(300)
    expect(await callbacks()).toEqual({}) // backing off
    await dueNow()
    expect(await callbacks()).toEqual({ retrying: 1 })
    expect((await queued())[0]).toMatchObject({ attempts: 2, last_error: 'answered HTTP 429' })
    await dueNow()
    expect(await callbacks()).toEqual({ sent: 1 })
    expect(hook.requests).toHaveLength(3)
    expect(new Set(hook.requests.map((q) => q.body)).size).toBe(1) // the same body each time
    expect((await events(w.t.db, callbackQueue, [r.id])).map((e) => [e.kind, (e.detail as { status_code?: number }).status_code])).toEqual([['retrying', 503], ['retrying', 429]])
  })

  it('gives up after 5 retries (6 attempts), visibly', async () => {
    await setHook()
    await text('+1 212 555 0100', w.keys.test)
    await sendStep()
    hook.answers.push(...Array(6).fill(500))
    for (let i = 0; i < 5; i++) {
      expect(await callbacks()).toEqual({ retrying: 1 })
      await dueNow()
    }
    expect(await callbacks()).toEqual({ failed: 1 })
    expect(hook.requests).toHaveLength(6)
    expect((await queued())[0]).toMatchObject({ attempts: 6, last_error: 'answered HTTP 500' })
    expect(await stats(w.t.db, callbackQueue)).toMatchObject({ waiting: 0, failed: 1 })
  })

  it('another 4xx fails at once, listed by `herald queue failed callbacks` and per service', async () => {
    await setHook()
    const id = await text('+1 212 555 0100', w.keys.test)
    await sendStep()
    hook.answers.push(400)
    expect(await callbacks()).toEqual({ failed: 1 })
    expect(hook.requests).toHaveLength(1)
    const [row] = await failedRows(w.t.db, queueOf('callbacks'))
    expect(row).toMatchObject({ attempts: 1, error: 'answered HTTP 400: not retried' })
    expect(await callbackFailures(w.t.db, w.service.id)).toMatchObject([{ kind: 'delivery_status', subjectId: id, status: 'delivered', error: 'answered HTTP 400: not retried' }])
    expect(await callbackFailures(w.t.db, (await createService(w.t.db, { name: 'Other' })).id)).toEqual([])
    await dueNow()
    expect(await callbacks()).toEqual({})
  })

  it('a server that never answers: timed out and retried; one that refuses connections: retried', async () => {
    await setHook()
    await text('+1 212 555 0100', w.keys.test)
    await sendStep()
    hook.answers.push('hang')
    const started = Date.now()
    expect(await callbacks({ timeoutMs: 300 })).toEqual({ retrying: 1 })
    expect(Date.now() - started).toBeLessThan(5000)
    expect((await queued())[0]).toMatchObject({ attempts: 1, last_error: 'no answer within 0.3 s' })
    const closed = await hookServer()
    await closed.close()
    await setHook(closed.url)
    await dueNow()
    expect(await callbacks()).toEqual({ retrying: 1 })
    expect((await queued())[0]).toMatchObject({ attempts: 2, last_error: 'could not connect: ECONNREFUSED' })
    await setHook()
    await dueNow()
    expect(await callbacks()).toEqual({ sent: 1 })
    expect(hook.requests).toHaveLength(2)
  })

  it('a callback removed after it was queued fails, visibly; nothing is posted', async () => {
    await setHook()
    await text('+1 212 555 0100', w.keys.test)
    await sendStep()
    await w.t.db.query('DELETE FROM service_callbacks')
    expect(await callbacks()).toEqual({ failed: 1 })
    expect((await queued())[0].last_error).toBe('the service has no delivery_status callback any more')
    expect(hook.requests).toHaveLength(0)
  })

  it('posts only rows whose claim this worker still holds', async () => {
    await setHook()
    await text('+1 212 555 0100', w.keys.test)
    await sendStep()
    // Another worker takes the rows right after this worker's claim (its lease ran out meanwhile).
    const db = w.t.db
    const thief = {
      kind: db.kind, exec: (sql: string) => db.exec(sql), copyInto: db.copyInto.bind(db), transaction: db.transaction.bind(db), close: async () => {},
      async query(sql: string, params?: unknown[]) {
        const rows = await db.query(sql, params)
        if (sql.includes('WITH picked')) await db.query(`UPDATE callback_queue SET claimed_by = 'other', claimed_until = now() + interval '1 minute'`)
        return rows
      },
    } as Db
    expect(await callbacks({ db: thief })).toEqual({})
    expect(hook.requests).toHaveLength(0)
    expect((await queued())[0]).toMatchObject({ sent_at: null, failed_at: null })
  })
})

describe('received-text callbacks', () => {
  it('a text a resident sends: Notify’s inbound callback body, with the inbound callback’s own token', async () => {
    await setHook() // a delivery-status callback: not the one a received text goes to
    const inbound = await hookServer()
    try {
      await setCallback(w.t.db, sealer, w.service.id, 'inbound_sms', inbound.url, 'inbound-token-0001')
      await setInboundNumber(w.t.db, w.service.id, '+1 212 555 0199')
      const at = new Date('2026-03-02T14:05:06.789Z')
      const got = await receiveText(w.t.db, sealer, { provider: 'twilio', ref: 'SM-in-1', from: '+12125550123', to: '+12125550199', body: 'When is my appointment?', receivedAt: at })
      expect(got.outcome).toBe('stored')
      const id = (got as { id: string }).id
      expect(await queued()).toMatchObject([{ kind: 'inbound_sms', subject_id: id, status: null }])
      expect(await callbacks()).toEqual({ sent: 1 })
      expect(hook.requests).toHaveLength(0)
      expect(inbound.requests).toHaveLength(1)
      expect(inbound.requests[0].headers.authorization).toBe('Bearer inbound-token-0001')
      expect(JSON.parse(inbound.requests[0].body)).toEqual({
        id, source_number: '+12125550123', destination_number: '+12125550199', message: 'When is my appointment?', date_received: '2026-03-02T14:05:06.789000Z' })
      // Gone by retention before it was sent: failed, visibly, nothing posted.
      await receiveText(w.t.db, sealer, { provider: 'twilio', ref: 'SM-in-2', from: '+12125550123', to: '+12125550199', body: 'Hello?' })
      await w.t.db.query('DELETE FROM received_texts')
      expect(await callbacks()).toEqual({ failed: 1 })
      expect(inbound.requests).toHaveLength(1)
      expect((await callbackFailures(w.t.db, w.service.id))[0]).toMatchObject({ kind: 'inbound_sms', error: 'the received text is no longer kept' })
    } finally {
      await inbound.close()
    }
  })
})

describe('setting callbacks', () => {
  it('by the API: set, listed without the token, replaced, removed; bad input is a 400 naming the field', async () => {
    const post = (body: object) => callApi(w, 'POST', '/v2/service/callbacks', body)
    const bad = async (body: object) => {
      const r = await post(body)
      expect(r.status).toBe(400)
      return ((await r.json()) as { errors: { error: string; message: string }[] }).errors
    }
    expect(await bad({ kind: 'delivery_status', url: 'http://example.com/hook', bearer_token: TOKEN })).toEqual([{ error: 'ValidationError', message: 'url is not a valid https url' }])
    expect((await bad({ kind: 'delivery_status', url: 'not a url', bearer_token: TOKEN }))[0].message).toMatch(/^url /)
    expect(await bad({ kind: 'delivery_status', url: 'https://example.com/hook', bearer_token: 'short' })).toEqual([{ error: 'ValidationError', message: 'bearer_token is too short: at least 10 characters' }])
    expect((await bad({ kind: 'letters', url: 'https://example.com/hook', bearer_token: TOKEN }))[0].message).toBe('kind is not one of [delivery_status, inbound_sms]')
    expect((await bad({ kind: 'delivery_status', bearer_token: TOKEN, extra: 1 })).map((e) => e.message)).toEqual(['url is a required property', 'Additional properties are not allowed (extra was unexpected)'])
    expect(JSON.stringify(await bad({ kind: 'delivery_status', url: 'ftp://x', bearer_token: 'secret' }))).not.toContain('secret')
    expect(await w.t.db.query('SELECT * FROM service_callbacks')).toEqual([])

    const ok = await post({ kind: 'delivery_status', url: 'https://cases.example.gov/notify', bearer_token: TOKEN })
    expect(ok.status).toBe(201)
    expect((await ok.json()).data).toMatchObject({ kind: 'delivery_status', url: 'https://cases.example.gov/notify' })
    expect((await post({ kind: 'inbound_sms', url: hook.url, bearer_token: 'another-token-1' })).status).toBe(201)
    const list = await callApi(w, 'GET', '/v2/service/callbacks')
    const text = await list.text()
    expect(JSON.parse(text).callbacks.map((c: { kind: string; url: string }) => [c.kind, c.url])).toEqual([['delivery_status', 'https://cases.example.gov/notify'], ['inbound_sms', hook.url]])
    expect(text).not.toContain(TOKEN)
    expect(text).not.toContain('another-token-1')
    const [stored] = await w.t.db.query(`SELECT token_ct FROM service_callbacks WHERE kind = 'delivery_status'`)
    expect(Buffer.from(stored.token_ct).includes(Buffer.from(TOKEN))).toBe(false)
    expect(sealer.open(Buffer.from(stored.token_ct))).toBe(TOKEN)

    expect((await post({ kind: 'delivery_status', url: 'https://cases.example.gov/v2', bearer_token: TOKEN })).status).toBe(201)
    expect((await listCallbacks(w.t.db, w.service.id))[0].url).toBe('https://cases.example.gov/v2')
    expect((await callApi(w, 'DELETE', '/v2/service/callbacks/delivery_status')).status).toBe(204)
    expect((await callApi(w, 'DELETE', '/v2/service/callbacks/delivery_status')).status).toBe(404)
    expect((await listCallbacks(w.t.db, w.service.id)).map((c) => c.kind)).toEqual(['inbound_sms'])
    // Another service's key sees and changes its own callbacks only.
    expect((await fetch(`${w.url}/v2/service/callbacks`)).status).toBe(401)
  })

  it('by the CLI: set with the token from stdin, shown without it (with the last failures), removed', async () => {
    const o = { service: w.service.name, kind: 'delivery_status' }
    await expect(serviceCallback(w.t.db, sealer, { ...o, url: 'http://cases.example.gov/' }, TOKEN)).rejects.toThrow('--url: url is not a valid https url')
    await expect(serviceCallback(w.t.db, sealer, { ...o, url: 'https://cases.example.gov/' }, 'short')).rejects.toThrow('--token-stdin: bearer_token is too short')
    await expect(serviceCallback(w.t.db, sealer, { service: w.service.id, kind: 'email', url: 'https://cases.example.gov/' }, TOKEN)).rejects.toThrow('--kind must be one of delivery_status, inbound_sms')
    const set = await serviceCallback(w.t.db, sealer, { ...o, url: 'https://cases.example.gov/notify' }, TOKEN)
    expect(set.text).toContain('delivery_status callback of Test results set: https://cases.example.gov/notify')
    expect(set.text).not.toContain(TOKEN)
    await w.t.db.query(`INSERT INTO callback_queue (service_id, kind, subject_id, status, attempts, last_error, failed_at)
      VALUES ($1, 'delivery_status', gen_random_uuid(), 'delivered', 1, 'answered HTTP 401: not retried', now())`, [w.service.id])
    const shown = await serviceCallback(w.t.db, sealer, { service: w.service.id })
    expect(shown.text).toContain('https://cases.example.gov/notify')
    expect(shown.text).toContain('answered HTTP 401: not retried')
    expect(JSON.stringify(shown.value)).not.toContain(TOKEN)
    expect((await serviceCallback(w.t.db, sealer, { ...o, remove: true })).text).toContain('removed')
    await expect(serviceCallback(w.t.db, sealer, { ...o, remove: true })).rejects.toThrow('has no delivery_status callback')
  })
})
