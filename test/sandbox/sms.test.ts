/** The SMS provider sandbox on its own: each provider's wire format, refusals, injected failures, receipts and their retries. */
import { afterEach, describe, expect, it } from 'vitest'
import { createServer, type IncomingMessage } from 'node:http'
import { once } from 'node:events'
import { twilioSignature } from '../../src/messaging/receipts/routes.ts'
import { startSmsSandbox, type SmsSandbox, type SmsSandboxOptions } from '../../src/sandbox/sms/server.ts'

const open: { close(): unknown }[] = []
afterEach(async () => {
  await Promise.all(open.splice(0).map((s) => s.close()))
})
async function sandbox(o: SmsSandboxOptions): Promise<SmsSandbox> {
  const s = await startSmsSandbox({ accountSid: 'ACx', authToken: 'tok', apiKey: 'k', apiSecret: 's', seed: 1, ...o })
  open.push(s)
  return s
}
/** A receiver for receipts: answers `codes` in turn (then 204), records what came. */
async function receiver(codes: number[] = []) {
  const got: { headers: IncomingMessage['headers']; body: string }[] = []
  const server = createServer((req, res) => {
    let body = ''
    req.on('data', (c) => (body += c)).on('end', () => {
      got.push({ headers: req.headers, body })
      res.writeHead(codes.shift() ?? 204).end()
    })
  }).listen(0, '127.0.0.1')
  await once(server, 'listening')
  open.push({ close: () => new Promise((r) => server.close(r)) })
  return { url: `http://127.0.0.1:${(server.address() as { port: number }).port}/cb`, got }
}
const until = async (check: () => boolean) => {
  for (let i = 0; i < 200 && !check(); i++) await new Promise((r) => setTimeout(r, 20))
}
const twilio = (s: SmsSandbox, form: Record<string, string>, auth = 'ACx:tok') => fetch(`${s.url}/2010-04-01/Accounts/ACx/Messages.json`, {
  method: 'POST', headers: { authorization: `Basic ${Buffer.from(auth).toString('base64')}`, 'content-type': 'application/x-www-form-urlencoded' },
  body: new URLSearchParams(form).toString(),
})
const vonage = (s: SmsSandbox, body: Record<string, string>) => fetch(`${s.url}/sms/json`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ api_key: 'k', api_secret: 's', ...body }) })

describe('twilio', () => {
  it('answers 201 with a message resource, then posts signed receipts: sent, then delivered', async () => {
    const s = await sandbox({ provider: 'twilio' })
    const r = await receiver()
    const res = await twilio(s, { To: '+12125550100', From: 'NYSDOH', Body: 'hello', StatusCallback: r.url })
    expect(res.status).toBe(201)
    const m = await res.json()
    expect(m).toMatchObject({ account_sid: 'ACx', to: '+12125550100', from: 'NYSDOH', body: 'hello', status: 'queued', num_segments: '1', direction: 'outbound-api' })
    expect(m.sid).toMatch(/^SM[0-9a-f]{32}$/)
    await until(() => r.got.length === 2)
    const params = r.got.map((g) => Object.fromEntries(new URLSearchParams(g.body)))
    expect(params.map((p) => p.MessageStatus)).toEqual(['sent', 'delivered'])
    expect(params[1]).toMatchObject({ MessageSid: m.sid, To: '+12125550100', AccountSid: 'ACx' })
    expect(r.got[1].headers['x-twilio-signature']).toBe(twilioSignature('tok', r.url, params[1]))
    expect(r.got[1].headers['x-twilio-signature']).not.toBe(twilioSignature('other', r.url, params[1]))
  })

  it('refuses bad auth, missing fields and invalid numbers as Twilio does; injected 429 and 500 record nothing', async () => {
    const s = await sandbox({ provider: 'twilio' })
    expect((await (await twilio(s, { To: '+12125550100', From: 'A', Body: 'x' }, 'ACx:wrong')).json()).code).toBe(20003)
    expect((await (await twilio(s, { To: '+12125550100', From: 'A' })).json())).toMatchObject({ code: 21602, status: 400 })
    expect((await (await twilio(s, { To: '+12125557300', From: 'A', Body: 'x' })).json()).code).toBe(21211)
    s.knobs.rateLimitRate = 1
    expect((await twilio(s, { To: '+12125550100', From: 'A', Body: 'x' })).status).toBe(429)
    s.knobs.rateLimitRate = 0
    await fetch(`${s.url}/sandbox/knobs`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ failureRate: 1 }) })
    expect((await twilio(s, { To: '+12125550100', From: 'A', Body: 'x' })).status).toBe(500)
    expect(s.ledger).toHaveLength(0)
    expect(s.stats).toMatchObject({ status429: 1, status5xx: 1, refused: 2 })
  })

  it('tries a receipt again when the receiver fails, and cancels pending receipts on close', async () => {
    const s = await sandbox({ provider: 'twilio' })
    const r = await receiver([500])
    await twilio(s, { To: '+12125557000', From: 'A', Body: 'x', StatusCallback: r.url })
    await until(() => s.stats.callbacksSent === 2)
    const statuses = r.got.map((g) => Object.fromEntries(new URLSearchParams(g.body)))
    expect(statuses.map((p) => [p.MessageStatus, p.ErrorCode])).toContainEqual(['undelivered', '30005'])
    expect(r.got).toHaveLength(3) // one failed, tried again
    s.knobs.callbackDelayMs = 60_000
    await twilio(s, { To: '+12125550100', From: 'A', Body: 'x', StatusCallback: r.url })
    await s.close() // returns at once: the timers are cancelled
    open.splice(open.indexOf(s), 1)
  })
})

describe('vonage', () => {
  it('splits a long text into parts, answers a status per part, and posts a receipt per part with the client-ref', async () => {
    const s = await sandbox({ provider: 'vonage' })
    const r = await receiver()
    const body = await (await vonage(s, { from: 'NYSDOH', to: '12125557100', text: 'a'.repeat(200), 'client-ref': 'n-1', callback: r.url })).json()
    expect(body['message-count']).toBe('2')
    expect(body.messages.map((m: any) => m.status)).toEqual(['0', '0'])
    await until(() => r.got.length === 2)
    const receipts = r.got.map((g) => JSON.parse(g.body))
    expect(receipts.map((x) => [x.status, x['err-code'], x['client-ref'], x.msisdn])).toEqual([['expired', '6', 'n-1', '12125557100'], ['expired', '6', 'n-1', '12125557100']])
    expect(new Set(receipts.map((x) => x.messageId))).toEqual(new Set(body.messages.map((m: any) => m['message-id'])))
    const unicode = await (await vonage(s, { from: 'A', to: '12125550100', text: 'ł'.repeat(71), type: 'unicode' })).json()
    expect(unicode['message-count']).toBe('2')
  })

  it('always answers 200: bad credentials 4, missing parameter 2, invalid number 3, throttled 1, internal error 5', async () => {
    const s = await sandbox({ provider: 'vonage' })
    const status = async (b: Record<string, string>) => (await (await vonage(s, b)).json()).messages[0].status
    expect(await status({ api_secret: 'wrong', from: 'A', to: '12125550100', text: 'x' })).toBe('4')
    expect(await status({ from: 'A', text: 'x' })).toBe('2')
    expect(await status({ from: 'A', to: '12125557399', text: 'x' })).toBe('3')
    s.knobs.rateLimitRate = 1
    expect(await status({ from: 'A', to: '12125550100', text: 'x' })).toBe('1')
    s.knobs.rateLimitRate = 0
    s.knobs.failureRate = 1
    expect(await status({ from: 'A', to: '12125550100', text: 'x' })).toBe('5')
    expect(s.ledger).toHaveLength(0)
  })
})
