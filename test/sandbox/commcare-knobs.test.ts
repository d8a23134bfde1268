/** The sandbox's knobs (429 bursts, injected 500s, latency) and its case forwarder. */
import { createServer, type IncomingMessage } from 'node:http'
import type { AddressInfo } from 'node:net'
import { afterAll, afterEach, describe, expect, it } from 'vitest'
import { DOMAIN, INDEX_CASE_XML, form, get, patient, postForm, sandbox } from './commcare-helpers.ts'

const LIST = `/a/${DOMAIN}/api/v0.5/case/?type=patient`

describe('knobs', () => {
  it('rateLimit: after every `every` requests, `burst` answers 429 with Retry-After, doing nothing', async () => {
    const s = await sandbox({ rateLimit: { every: 2, burst: 2, retryAfterSeconds: 7 } })
    expect((await get(s, LIST)).status).toBe(200)
    expect((await get(s, LIST)).status).toBe(200)
    const limited = await get(s, LIST)
    expect(limited.status).toBe(429)
    expect(limited.headers.get('retry-after')).toBe('7')
    expect(limited.headers.get('content-type')).toMatch(/^text\/plain/)
    expect(await limited.text()).toBe('Rate limited, retry after 7 seconds')
    expect((await postForm(s, INDEX_CASE_XML)).status).toBe(429)
    expect(s.cases()).toEqual([])
    expect((await postForm(s, INDEX_CASE_XML)).status).toBe(201)
    expect(s.stats).toMatchObject({ requests: 5, status429: 2, submissions: 1 })
  })

  it('failureRate 1: every request answers 500 and nothing is applied; 0 again at run time: all is well', async () => {
    const s = await sandbox({ failureRate: 1 })
    expect((await postForm(s, INDEX_CASE_XML)).status).toBe(500)
    expect((await get(s, LIST)).status).toBe(500)
    expect(s.cases()).toEqual([])
    expect(s.stats.status5xx).toBe(2)
    s.knobs.failureRate = 0
    expect((await postForm(s, INDEX_CASE_XML)).status).toBe(201)
  })

  it('failureRate draws from the seed: the same seed fails the same requests', async () => {
    const statuses = async () => {
      const s = await sandbox({ failureRate: 0.5, seed: 42 })
      const out: number[] = []
      for (let i = 0; i < 12; i++) out.push((await get(s, LIST)).status)
      return out
    }
    const first = await statuses()
    expect(first).toContain(500)
    expect(first).toContain(200)
    expect(await statuses()).toEqual(first)
  })

  it('latency delays the answer, after the form has been applied', async () => {
    const s = await sandbox({ latencyMs: 400 })
    const started = Date.now()
    const answer = postForm(s, INDEX_CASE_XML)
    await new Promise((r) => setTimeout(r, 200))
    expect(s.cases()).toHaveLength(2) // applied, answer still waiting
    expect((await answer).status).toBe(201)
    expect(Date.now() - started).toBeGreaterThanOrEqual(390)
    s.knobs.latencyMs = 0
    const quick = Date.now()
    await get(s, LIST)
    expect(Date.now() - quick).toBeLessThan(300)
  })
})

describe('case forwarder', () => {
  const received: { auth?: string; body: any }[] = []
  let failFirst = 0
  const target = createServer((req: IncomingMessage, res) => {
    let body = ''
    req.on('data', (c) => (body += c))
    req.on('end', () => {
      if (failFirst-- > 0) return void res.writeHead(503).end()
      received.push({ auth: req.headers.authorization, body: JSON.parse(body) })
      res.writeHead(200).end()
    })
  })
  afterEach(() => {
    received.length = 0
    failFirst = 0
  })
  afterAll(() => new Promise<void>((r) => (target.listening ? target.close(() => r()) : r())))

  async function forwardingSandbox() {
    if (!target.listening) await new Promise<void>((r) => target.listen(0, '127.0.0.1', r))
    const url = `http://127.0.0.1:${(target.address() as AddressInfo).port}/forward`
    return sandbox({ forwardTo: { url, user: 'fwd', password: 'secret' } })
  }
  const until = async (done: () => boolean) => {
    for (let i = 0; i < 100 && !done(); i++) await new Promise((r) => setTimeout(r, 20))
  }

  it('POSTs the patient case with basic auth after a form, retrying a failed post', async () => {
    failFirst = 1
    const s = await forwardingSandbox()
    expect((await postForm(s, INDEX_CASE_XML)).status).toBe(201)
    await until(() => received.length > 0)
    expect(received).toHaveLength(1) // the patient only, once despite the 503
    expect(received[0].auth).toBe('Basic ' + Buffer.from('fwd:secret').toString('base64'))
    expect(received[0].body).toMatchObject({ case_id: '22a7400b-ab3f-4b17-8131-d7f312988433', domain: DOMAIN, properties: { case_type: 'patient' } })
    expect(received[0].body).not.toHaveProperty('child_cases')
  })

  it('forwards an investigator edit', async () => {
    const s = await forwardingSandbox()
    await postForm(s, form([{ id: 'p1', create: patient('E1') }]))
    await until(() => received.length > 0)
    s.edit(DOMAIN, 'p1', { current_status: 'closed' })
    await until(() => received.length > 1)
    expect(received.map((r) => r.body.properties.current_status ?? null)).toEqual([null, 'closed'])
    expect(received[1].body.user_id).toBe('investigator')
  })
})
