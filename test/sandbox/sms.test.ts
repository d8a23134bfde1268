/** The SMS provider sandbox speaks Twilio's and Vonage's wire formats: answers, refusals, injected failures, receipts by number, retries, parts, knobs, close. */
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { createServer, type IncomingHttpHeaders } from 'node:http'
import { afterEach, describe, expect, it } from 'vitest'
import { until } from '../helpers/wait.ts'
import { twilioSignature as heraldTwilioSignature } from '../../src/messaging/receipts/routes.ts'
import { startSmsSandbox, twilioSignature, type SmsSandbox, type SmsSandboxOptions } from '../../src/sandbox/sms/server.ts'

const SID = 'ACsandbox0000000000000000000000000'
const TOKEN = 'sandbox-token'
const KEY = 'abcd1234'
const SECRET = 'sandbox-secret-0'
const NOON = Date.UTC(2026, 10, 23, 12, 0, 0) // Mon, 23 Nov 2026 12:00:00 UTC

const open: { close(): unknown }[] = []
afterEach(async () => {
  await Promise.all(open.splice(0).map((s) => s.close()))
})

async function sandbox(provider: 'twilio' | 'vonage', opts: Partial<SmsSandboxOptions> = {}): Promise<SmsSandbox> {
  const s = await startSmsSandbox({ provider, accountSid: SID, authToken: TOKEN, apiKey: KEY, apiSecret: SECRET, seed: 1, ...opts })
  open.push(s)
  return s
}

interface Received { url: string; headers: IncomingHttpHeaders; body: string }
/** A receipt receiver on loopback: answers `codes` in turn (then 204) and records every request. */
async function receiver(codes: number[] = []) {
  const got: Received[] = []
  const server = createServer((req, res) => {
    let body = ''
    req.on('data', (c) => (body += c)).on('end', () => {
      got.push({ url: req.url ?? '', headers: req.headers, body })
      res.writeHead(codes.shift() ?? 204).end()
    })
  }).listen(0, '127.0.0.1')
  await once(server, 'listening')
  open.push({ close: () => new Promise((r) => (server.closeAllConnections(), server.close(r))) })
  const url = `http://127.0.0.1:${(server.address() as { port: number }).port}/receipts`
  return { url, got, form: () => got.map((g) => Object.fromEntries(new URLSearchParams(g.body))), json: () => got.map((g) => JSON.parse(g.body)) }
}

const pause = (ms: number) => new Promise((r) => setTimeout(r, ms))

async function twilio(s: SmsSandbox, form: Record<string, string>, o: { auth?: string | null; account?: string; json?: boolean } = {}) {
  const headers: Record<string, string> = { 'content-type': o.json ? 'application/json' : 'application/x-www-form-urlencoded' }
  if (o.auth !== null) headers.authorization = `Basic ${Buffer.from(o.auth ?? `${SID}:${TOKEN}`).toString('base64')}`
  const res = await fetch(`${s.url}/2010-04-01/Accounts/${o.account ?? SID}/Messages.json`, {
    method: 'POST', headers, body: o.json ? JSON.stringify(form) : new URLSearchParams(form).toString(),
  })
  return { status: res.status, body: await res.json() }
}
const text = (to: string, more: Record<string, string> = {}) => ({ To: to, From: '+15005550006', Body: 'Your result is ready.', ...more })

async function vonage(s: SmsSandbox, fields: Record<string, string | number>, as: 'json' | 'form' = 'json') {
  const all = { api_key: KEY, api_secret: SECRET, ...fields }
  const res = await fetch(`${s.url}/sms/json`, as === 'json'
    ? { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(all) }
    : { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams(all as Record<string, string>).toString() })
  expect(res.status).toBe(200) // Vonage answers 200 whatever happened
  return res.json()
}
const sms = (to: string, more: Record<string, string> = {}) => ({ from: 'Herald', to, text: 'Your result is ready.', ...more })

describe('twilio: the create call', () => {
  it('answers 201 with the message resource; GET shows it, and receipts move it to delivered', async () => {
    const s = await sandbox('twilio', { now: () => NOON })
    const res = await twilio(s, text('+12125550100'))
    expect(res.status).toBe(201)
    const sid = res.body.sid
    expect(sid).toMatch(/^SM[0-9a-f]{32}$/)
    expect(res.body).toEqual({
      sid, account_sid: SID, to: '+12125550100', from: '+15005550006', messaging_service_sid: null, body: 'Your result is ready.',
      status: 'queued', num_segments: '1', num_media: '0', direction: 'outbound-api', api_version: '2010-04-01',
      date_created: 'Mon, 23 Nov 2026 12:00:00 +0000', date_updated: 'Mon, 23 Nov 2026 12:00:00 +0000', date_sent: null,
      price: null, price_unit: 'USD', error_code: null, error_message: null,
      uri: `/2010-04-01/Accounts/${SID}/Messages/${sid}.json`, subresource_uris: { media: `/2010-04-01/Accounts/${SID}/Messages/${sid}/Media.json` },
    })
    await until(() => s.ledger[0]?.status === 'delivered')
    expect(s.ledger).toEqual([{ id: sid, partIds: [sid], to: '+12125550100', from: '+15005550006', body: 'Your result is ready.', parts: 1, outcome: 'delivered', status: 'delivered', at: NOON }])
    const auth = `Basic ${Buffer.from(`${SID}:${TOKEN}`).toString('base64')}`
    const got = await (await fetch(`${s.url}${res.body.uri}`, { headers: { authorization: auth } })).json()
    expect(got).toMatchObject({ sid, status: 'delivered', date_sent: 'Mon, 23 Nov 2026 12:00:00 +0000', price: '-0.00790', error_code: null })
    const missing = await fetch(`${s.url}/2010-04-01/Accounts/${SID}/Messages/SM${'0'.repeat(32)}.json`, { headers: { authorization: auth } })
    expect(missing.status).toBe(404)
    expect(await missing.json()).toMatchObject({ code: 20404, status: 404 })
    expect(s.stats).toMatchObject({ requests: 3, accepted: 1, callbacksSent: 0 })
    expect(s.sentPerRecipient()).toEqual(new Map([['+12125550100', 1]]))
  })

  it('counts segments as Twilio does: GSM-7 160 then 153, escapes two septets, UCS-2 70 then 67', async () => {
    const s = await sandbox('twilio')
    const cases: [string, string][] = [['a'.repeat(160), '1'], ['a'.repeat(161), '2'], ['a'.repeat(306), '2'], ['a'.repeat(307), '3'], ['{'.repeat(80), '1'], ['{'.repeat(81), '2'], ['ł'.repeat(70), '1'], ['ł'.repeat(71), '2']]
    for (const [body, n] of cases) expect((await twilio(s, text('+12125550100', { Body: body }))).body.num_segments).toBe(n)
  })

  it('through a Messaging Service without From: accepted, from null, then the pool number in the receipts', async () => {
    const s = await sandbox('twilio')
    const r = await receiver()
    const res = await twilio(s, { To: '+12125550100', MessagingServiceSid: 'MG' + 'a'.repeat(32), Body: 'hi', StatusCallback: r.url })
    expect(res.body).toMatchObject({ status: 'accepted', from: null, messaging_service_sid: 'MG' + 'a'.repeat(32) })
    await until(() => r.got.length === 2)
    expect(r.form()[0]).toMatchObject({ MessageStatus: 'sent', From: '+15005550006', MessagingServiceSid: 'MG' + 'a'.repeat(32) })
  })

  it('refuses bad auth with 401 20003 and another account with 404 20404', async () => {
    const s = await sandbox('twilio')
    for (const auth of [`${SID}:wrong`, null]) {
      const res = await twilio(s, text('+12125550100'), { auth })
      expect(res).toEqual({ status: 401, body: { code: 20003, message: 'Authenticate', more_info: 'https://www.twilio.com/docs/errors/20003', status: 401 } })
    }
    const other = await twilio(s, text('+12125550100'), { account: 'ACother' })
    expect(other.status).toBe(404)
    expect(other.body).toMatchObject({ code: 20404, more_info: 'https://www.twilio.com/docs/errors/20404', status: 404 })
    expect(s.ledger).toEqual([])
    expect(s.stats.refused).toEqual({ auth: 2, account: 1 })
  })

  const refusals: [string, Record<string, string>, number, string][] = [
    ['no To', { From: '+15005550006', Body: 'x' }, 21604, 'missing_to'],
    ['neither From nor MessagingServiceSid', { To: '+12125550100', Body: 'x' }, 21603, 'missing_from'],
    ['a From that is no sender', text('+12125550100', { From: 'not a sender id!' }), 21212, 'invalid_from'],
    ['no Body', { To: '+12125550100', From: '+15005550006' }, 21602, 'missing_body'],
    ['a Body over 1600 characters', text('+12125550100', { Body: 'a'.repeat(1601) }), 21617, 'body_too_long'],
    ['a To that is not E.164', text('212-555-0100'), 21211, 'invalid_to'],
    ['a StatusCallback that is no URL', text('+12125550100', { StatusCallback: 'receipts' }), 21609, 'invalid_callback'],
    ['a To in 7300–7399', text('+12125557300'), 21211, 'unroutable'],
  ]
  for (const [what, form, code, kind] of refusals) {
    it(`refuses ${what} with 400 ${code}, recording nothing`, async () => {
      const s = await sandbox('twilio')
      const res = await twilio(s, form)
      expect(res.status).toBe(400)
      expect(res.body).toEqual({ code, message: expect.any(String), more_info: `https://www.twilio.com/docs/errors/${code}`, status: 400 })
      expect(res.body.message).not.toMatch(/212/) // no number in a refusal
      expect(s.ledger).toEqual([])
      expect(s.stats.refused).toEqual({ [kind]: 1 })
    })
  }

  it('reads form fields only: a JSON body has no To', async () => {
    const s = await sandbox('twilio')
    expect((await twilio(s, text('+12125550100'), { json: true })).body.code).toBe(21604)
  })

  it('injected 429 20429 and 500 20500 record nothing; the seed repeats them', async () => {
    const s = await sandbox('twilio', { rateLimitRate: 1 })
    expect(await twilio(s, text('+12125550100'))).toEqual({ status: 429, body: { code: 20429, message: 'Too Many Requests', more_info: 'https://www.twilio.com/docs/errors/20429', status: 429 } })
    s.knobs.rateLimitRate = 0
    s.knobs.failureRate = 1
    expect(await twilio(s, text('+12125550100'))).toMatchObject({ status: 500, body: { code: 20500, status: 500 } })
    expect(s.ledger).toEqual([])
    expect(s.stats).toMatchObject({ requests: 2, accepted: 0, status429: 1, status5xx: 1, refused: {} })

    const run = async () => {
      const t = await sandbox('twilio', { seed: 7, rateLimitRate: 0.3, failureRate: 0.3 })
      const statuses = []
      for (let i = 0; i < 12; i++) statuses.push((await twilio(t, text('+12125550100'))).status)
      return statuses
    }
    const first = await run()
    expect(new Set(first)).toEqual(new Set([201, 429, 500]))
    expect(await run()).toEqual(first)
  })
})

describe('twilio: status callbacks', () => {
  it('posts sent, then delivered, form-encoded and signed over the full URL with the auth token', async () => {
    const s = await sandbox('twilio')
    const r = await receiver()
    const callback = `${r.url}?notification=n-1`
    const { body } = await twilio(s, text('+12125550100', { StatusCallback: callback }))
    await until(() => r.got.length === 2)
    const [sent, delivered] = r.form()
    expect(sent).toEqual({ MessageSid: body.sid, SmsSid: body.sid, AccountSid: SID, From: '+15005550006', To: '+12125550100', MessageStatus: 'sent', SmsStatus: 'sent', ApiVersion: '2010-04-01' })
    expect(delivered).toMatchObject({ MessageSid: body.sid, MessageStatus: 'delivered', SmsStatus: 'delivered', RawDlrDoneDate: expect.stringMatching(/^\d{10}$/) })
    expect(delivered).not.toHaveProperty('ErrorCode')
    for (const [i, got] of r.got.entries()) {
      expect(got.url).toBe('/receipts?notification=n-1')
      expect(got.headers['content-type']).toBe('application/x-www-form-urlencoded')
      const signature = got.headers['x-twilio-signature']
      expect(signature).toBe(twilioSignature(TOKEN, callback, r.form()[i]))
      expect(signature).not.toBe(twilioSignature('another-token', callback, r.form()[i]))
      expect(signature).toBe(heraldTwilioSignature(TOKEN, callback, r.form()[i])) // Herald's receipt endpoint agrees
    }
    // The sandbox counts a callback once the receiver has answered it, just after the receiver saw it.
    await until(() => s.stats.callbacksSent === 2)
    expect(s.stats).toMatchObject({ callbacksSent: 2, callbacksFailed: 0 })
  })

  it('twilioSignature reproduces the example in Twilio\'s security docs', () => {
    const params = { CallSid: 'CA1234567890ABCDE', Caller: '+14158675309', Digits: '1234', From: '+14158675309', To: '+18005551212' }
    expect(twilioSignature('12345', 'https://mycompany.com/myapp.php?foo=1&bar=2', params)).toBe('RSOYDt4T1cUTdK1PDd93/VVr8B8=')
  })

  it('the last four digits choose the final status and ErrorCode', async () => {
    const s = await sandbox('twilio')
    const r = await receiver()
    const sids = new Map<string, string>()
    for (const last4 of ['7000', '7100', '7200', '7400', '7500']) {
      sids.set((await twilio(s, text(`+1212555${last4}`, { StatusCallback: r.url }))).body.sid, last4)
    }
    await until(() => r.got.length === 8)
    await pause(50) // nothing more comes: 7200 never gets a final receipt
    const byNumber: Record<string, string[]> = {}
    for (const p of r.form()) (byNumber[sids.get(p.MessageSid)!] ??= []).push(`${p.MessageStatus}${p.ErrorCode ? `/${p.ErrorCode}` : ''}`)
    expect(byNumber).toEqual({
      7000: ['sent', 'undelivered/30005'], 7100: ['sent', 'undelivered/30003'], 7200: ['sent'], 7400: ['sent', 'undelivered/30006'], 7500: ['failed/30008'],
    })
    expect(s.ledger.map((e) => [e.to.slice(-4), e.outcome, e.status])).toEqual([
      ['7000', 'permanentFailure', 'undelivered'], ['7100', 'temporaryFailure', 'undelivered'], ['7200', 'noReceipt', 'sent'],
      ['7400', 'landline', 'undelivered'], ['7500', 'unknownError', 'failed'],
    ])
  })

  it('tries a callback again when the receiver answers 500, and gives up after 3 tries', async () => {
    const s = await sandbox('twilio')
    const r = await receiver([500])
    await twilio(s, text('+12125550100', { StatusCallback: r.url }))
    await until(() => s.stats.callbacksSent === 2)
    expect(r.form().map((p) => p.MessageStatus)).toEqual(['sent', 'sent', 'delivered'])
    expect(s.stats.callbacksFailed).toBe(0)

    const down = await receiver([500, 500, 500, 500, 500, 500])
    await twilio(s, text('+12125550101', { StatusCallback: down.url }))
    await until(() => s.stats.callbacksFailed === 2)
    expect(down.form().map((p) => p.MessageStatus)).toEqual(['sent', 'sent', 'sent', 'delivered', 'delivered', 'delivered'])
    expect(s.ledger[1].status).toBe('delivered')
  })

  it('a receiver that is not there counts as a failed callback', async () => {
    const s = await sandbox('twilio')
    const r = await receiver()
    const gone = r.url
    await open.pop()!.close()
    await twilio(s, text('+12125557500', { StatusCallback: gone })) // failed: one callback only
    await until(() => s.stats.callbacksFailed === 1)
    expect(s.stats.callbacksSent).toBe(0)
  })
})

describe('vonage: the create call', () => {
  it('answers 200 with one accepted message, from JSON or a form', async () => {
    const s = await sandbox('vonage', { callbackDelayMs: 60_000 }) // its receipt step is still to come
    for (const as of ['json', 'form'] as const) {
      const body = await vonage(s, sms('12125550100', { 'client-ref': 'n-1' }), as)
      expect(body).toEqual({
        'message-count': '1',
        messages: [{ to: '12125550100', 'message-id': expect.stringMatching(/^[0-9A-F]{16}$/), status: '0', 'remaining-balance': expect.stringMatching(/^\d+\.\d{8}$/), 'message-price': '0.00790000', network: '00101', 'client-ref': 'n-1' }],
      })
    }
    expect(await vonage(s, { from: 'Herald', to: 12125550100, text: 'numbers are read as text' })).toMatchObject({ messages: [{ status: '0', to: '12125550100' }] })
    expect(s.ledger.map((e) => [e.to, e.from, e.parts, e.status])).toEqual([['12125550100', 'Herald', 1, 'accepted'], ['12125550100', 'Herald', 1, 'accepted'], ['12125550100', 'Herald', 1, 'accepted']])
    expect(s.sentPerRecipient().get('12125550100')).toBe(3)
  })

  it('splits a long text as Vonage does, one message-id per part: 160/153 for text, 70/67 for unicode', async () => {
    const s = await sandbox('vonage')
    const cases: [string, string | undefined, number][] = [
      ['a'.repeat(160), undefined, 1], ['a'.repeat(161), 'text', 2], ['a'.repeat(306), undefined, 2], ['a'.repeat(307), undefined, 3],
      ['{'.repeat(81), undefined, 2], ['ł'.repeat(70), 'unicode', 1], ['ł'.repeat(71), 'unicode', 2], ['a'.repeat(71), 'unicode', 2],
    ]
    for (const [t, type, n] of cases) {
      const body = await vonage(s, sms('12125550100', { text: t, ...(type && { type }) }))
      expect(body['message-count']).toBe(String(n))
      expect(body.messages).toHaveLength(n)
      expect(new Set(body.messages.map((m: { 'message-id': string }) => m['message-id'])).size).toBe(n)
    }
    expect(s.ledger.map((e) => e.parts)).toEqual(cases.map(([, , n]) => n))
  })

  const refusals: [string, Record<string, string>, string, string, string][] = [
    ['no api_key', { api_key: '' }, '2', 'Missing api_key', 'auth'],
    ['a wrong secret', { api_secret: 'wrong' }, '4', 'Bad Credentials', 'auth'],
    ['no from', { from: '' }, '2', 'Missing from param', 'missing_from'],
    ['no to', { to: '' }, '2', 'Missing to param', 'missing_to'],
    ['no text', { text: '' }, '2', 'Missing text param', 'missing_text'],
    ['a type it does not speak', { type: 'binary' }, '3', 'Invalid type parameter', 'invalid_type'],
    ['a to with a plus', { to: '+12125550100' }, '3', 'Invalid to address', 'invalid_to'],
    ['a client-ref over 100 characters', { 'client-ref': 'r'.repeat(101) }, '3', 'Invalid client-ref param', 'invalid_client_ref'],
    ['a callback that is no URL', { callback: 'receipts' }, '23', 'Invalid Callback Url', 'invalid_callback'],
    ['a to in 7300–7399', { to: '12125557399' }, '6', 'Unroutable message - rejected', 'unroutable'],
  ]
  for (const [what, over, status, errorText, kind] of refusals) {
    it(`refuses ${what} with status ${status}, recording nothing`, async () => {
      const s = await sandbox('vonage')
      const fields: Record<string, string> = { api_key: KEY, api_secret: SECRET, ...sms('12125550100'), ...over }
      for (const k of Object.keys(fields)) if (fields[k] === '') delete fields[k]
      const res = await fetch(`${s.url}/sms/json`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(fields) })
      const body = await res.json()
      expect(res.status).toBe(200)
      expect(body).toEqual({ 'message-count': '1', messages: [{ status, 'error-text': errorText }] })
      expect(s.ledger).toEqual([])
      expect(s.stats.refused).toEqual({ [kind]: 1 })
    })
  }

  it('injected rate limit (status 1) and internal error (status 5) record nothing', async () => {
    const s = await sandbox('vonage', { rateLimitRate: 1 })
    expect((await vonage(s, sms('12125550100'))).messages).toEqual([{ status: '1', 'error-text': expect.stringMatching(/^Throughput Rate Exceeded/) }])
    await fetch(`${s.url}/sandbox/knobs`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ rateLimitRate: 0, failureRate: 1 }) })
    expect((await vonage(s, sms('12125550100'))).messages).toEqual([{ status: '5', 'error-text': 'Internal Error' }])
    expect(s.ledger).toEqual([])
    expect(s.stats).toMatchObject({ status429: 1, status5xx: 1, accepted: 0, refused: {} })
  })
})

describe('vonage: delivery receipts', () => {
  it('posts one JSON receipt per part, in Vonage\'s format, with the client-ref', async () => {
    const s = await sandbox('vonage', { now: () => NOON })
    const r = await receiver()
    const body = await vonage(s, sms('12125550100', { text: 'a'.repeat(200), 'client-ref': 'n-1', callback: r.url }))
    expect(body['message-count']).toBe('2')
    await until(() => r.got.length === 2)
    expect(r.got.every((g) => g.headers['content-type'] === 'application/json')).toBe(true)
    const receipts = r.json().sort((a, b) => a.messageId.localeCompare(b.messageId))
    const ids = body.messages.map((m: { 'message-id': string }) => m['message-id']).sort()
    expect(receipts).toEqual(ids.map((id: string) => ({
      msisdn: '12125550100', to: 'Herald', 'network-code': '00101', messageId: id, price: '0.00790000', status: 'delivered',
      scts: '2611231200', 'err-code': '0', 'client-ref': 'n-1', 'api-key': KEY, 'message-timestamp': '2026-11-23 12:00:00',
    })))
    expect(s.ledger[0]).toMatchObject({ id: body.messages[0]['message-id'], partIds: body.messages.map((m: { 'message-id': string }) => m['message-id']), status: 'delivered', parts: 2 })
  })

  it('the last four digits choose status and err-code; 7200 never gets one', async () => {
    const s = await sandbox('vonage')
    const r = await receiver()
    for (const last4 of ['7000', '7100', '7200', '7400', '7500']) await vonage(s, sms(`1212555${last4}`, { callback: r.url }))
    await until(() => r.got.length === 4)
    await pause(50)
    const byNumber = Object.fromEntries(r.json().map((x) => [x.msisdn.slice(-4), `${x.status}/${x['err-code']}`]))
    expect(byNumber).toEqual({ 7000: 'failed/3', 7100: 'expired/2', 7400: 'failed/12', 7500: 'failed/99' })
    expect(s.ledger.find((e) => e.to.endsWith('7200'))?.status).toBe('accepted')
  })

  it('status-report-req=0 asks for no receipt; the ledger still follows the outcome', async () => {
    const s = await sandbox('vonage')
    const r = await receiver()
    await vonage(s, sms('12125557100', { callback: r.url, 'status-report-req': '0' }))
    await until(() => s.ledger[0].status === 'expired')
    await pause(50)
    expect(r.got).toEqual([])
  })

  it('retries a receipt the receiver first answers 500', async () => {
    const s = await sandbox('vonage')
    const r = await receiver([500])
    await vonage(s, sms('12125550100', { callback: r.url }))
    await until(() => s.stats.callbacksSent === 1)
    expect(r.json().map((x) => x.status)).toEqual(['delivered', 'delivered'])
  })
})

describe('knobs, admin routes, close', () => {
  it('POST /sandbox/knobs turns the knobs, checks them all first, and the outcome mix picks fates', async () => {
    const s = await sandbox('twilio')
    const post = (body: unknown) => fetch(`${s.url}/sandbox/knobs`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) })
    const res = await post({ callbackDelayMs: 5, latencyMs: 0, outcomes: { permanentFailure: 1 }, seed: 3 })
    expect(await res.json()).toEqual({ latencyMs: 0, callbackDelayMs: 5, outcomes: { delivered: 0, temporaryFailure: 0, permanentFailure: 1 }, failureRate: 0, rateLimitRate: 0, seed: 3 })
    for (const bad of [{ failureRate: 2 }, { latencyMs: -1 }, { outcomes: { lost: 1 } }, { seed: 1.5 }, { callbackDelayMs: 100, rateLimitRate: 'x' }]) {
      const refused = await post(bad)
      expect(refused.status).toBe(400)
      expect(await refused.json()).toEqual({ error: expect.any(String) })
    }
    expect(s.knobs.callbackDelayMs).toBe(5)
    const r = await receiver()
    await twilio(s, text('+12125550100', { StatusCallback: r.url }))
    await until(() => r.got.length === 2)
    expect(r.form()[1]).toMatchObject({ MessageStatus: 'undelivered', ErrorCode: '30005' })
    await post({ outcomes: { delivered: 1, temporaryFailure: 1 } })
    for (let i = 0; i < 20; i++) await twilio(s, text('+12125550100'))
    expect(new Set(s.ledger.slice(1).map((e) => e.outcome))).toEqual(new Set(['delivered', 'temporaryFailure']))
    const stats = await (await fetch(`${s.url}/sandbox/stats`)).json()
    expect(stats).toMatchObject({ requests: 21, accepted: 21 })
    const ledger = await (await fetch(`${s.url}/sandbox/ledger`)).json()
    expect(ledger).toHaveLength(21)
  })

  it('latency delays the answer, after the text was accepted', async () => {
    const s = await sandbox('vonage', { latencyMs: 300 })
    const started = Date.now()
    const answer = vonage(s, sms('12125550100'))
    await pause(150)
    expect(s.ledger).toHaveLength(1)
    await answer
    expect(Date.now() - started).toBeGreaterThanOrEqual(290)
  })

  it('close() cancels pending receipts and retries at once', async () => {
    const s = await sandbox('twilio', { callbackDelayMs: 60_000 })
    const r = await receiver()
    await twilio(s, text('+12125550100', { StatusCallback: r.url }))
    const retrying = await sandbox('vonage')
    const failing = await receiver([500, 500, 500])
    await vonage(retrying, sms('12125550100', { callback: failing.url }))
    await until(() => failing.got.length === 1)
    const started = Date.now()
    await Promise.all([s.close(), retrying.close()])
    expect(Date.now() - started).toBeLessThan(500)
    await pause(400)
    expect(r.got).toEqual([])
    expect(failing.got).toHaveLength(1)
    expect(retrying.stats.callbacksFailed).toBe(0)
  })

  it('a process that closes a sandbox with receipts pending exits on its own', async () => {
    const script = `
      import { startSmsSandbox } from ${JSON.stringify(new URL('../../src/sandbox/sms/server.ts', import.meta.url).pathname)}
      const s = await startSmsSandbox({ provider: 'vonage', apiKey: 'k', apiSecret: 's', callbackDelayMs: 60000 })
      await fetch(s.url + '/sms/json', { method: 'POST', headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ api_key: 'k', api_secret: 's', from: 'Herald', to: '12125550100', text: 'x', callback: 'http://127.0.0.1:9/receipts' }) })
      await s.close()
      console.log('closed')`
    const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { cwd: process.cwd(), stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''
    child.stdout.on('data', (c) => (out += c))
    child.stderr.on('data', (c) => (out += c))
    const timer = setTimeout(() => child.kill('SIGKILL'), 15_000)
    const [code] = await once(child, 'exit')
    clearTimeout(timer)
    expect(out.trim()).toBe('closed')
    expect(code).toBe(0)
  })

  it('main.ts runs it standalone and prints where it listens', async () => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'src/sandbox/sms/main.ts', '--provider', 'vonage', '--port', '0', '--api-key', KEY, '--api-secret', SECRET], { cwd: process.cwd(), stdio: ['ignore', 'pipe', 'pipe'] })
    const timer = setTimeout(() => child.kill('SIGKILL'), 15_000)
    let out = ''
    child.stdout.on('data', (c) => (out += c))
    await until(() => /listening on http:\/\/127\.0\.0\.1:\d+/.test(out), 15_000)
    const url = /listening on (http:\/\/127\.0\.0\.1:\d+)/.exec(out)![1]
    const body = await (await fetch(`${url}/sms/json`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ api_key: KEY, api_secret: SECRET, ...sms('12125550100') }) })).json()
    expect(body.messages[0].status).toBe('0')
    child.kill('SIGTERM')
    const [code] = await once(child, 'exit')
    clearTimeout(timer)
    expect(code).toBe(0)
  })
})
