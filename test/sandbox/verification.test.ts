/** The verification server sandbox speaks the admin API: issue, non-atomic batches, uuid conflicts, quota, injected failures, auth. */
import { randomUUID } from 'node:crypto'
import { afterEach, describe, expect, it } from 'vitest'
import { startVerificationSandbox, type VerificationSandbox, type VerificationSandboxOptions } from '../../src/sandbox/verification/server.ts'

const KEY = 'sandbox-admin-key'
const open: VerificationSandbox[] = []
afterEach(async () => {
  await Promise.all(open.splice(0).map((s) => s.close()))
})

async function sandbox(opts: Partial<VerificationSandboxOptions> = {}): Promise<VerificationSandbox> {
  const s = await startVerificationSandbox({ apiKey: KEY, seed: 1, ...opts })
  open.push(s)
  return s
}

let phoneN = 0
/** A valid issue request; each call a new uuid and phone unless given. */
const item = (over: Record<string, unknown> = {}) =>
  ({ testType: 'confirmed', testDate: '2026-11-20', tzOffset: -300, phone: `+1212555${String(phoneN++ % 10_000).padStart(4, '0')}`, uuid: randomUUID(), padding: 'cGFk', ...over })

async function post(s: VerificationSandbox, path: string, body: unknown, key = KEY) {
  const res = await fetch(s.url + path, {
    method: 'POST', headers: { 'x-api-key': key, 'content-type': 'application/json', accept: 'application/json' }, body: JSON.stringify(body),
  })
  const text = await res.text()
  return { status: res.status, headers: res.headers, text, json: res.headers.get('content-type')?.startsWith('application/json') ? JSON.parse(text) : undefined }
}
const batch = (s: VerificationSandbox, codes: unknown[]) => post(s, '/api/batch-issue', { codes, padding: 'cGFk' })

describe('issue', () => {
  it('issues one code, texts it, and answers the item at the top level', async () => {
    const s = await sandbox()
    const req = item({ symptomDate: '2026-11-18' })
    const res = await post(s, '/api/issue', req)
    expect(res.status).toBe(200)
    expect(res.json).toMatchObject({ uuid: req.uuid, code: expect.stringMatching(/^\d{8}$/), padding: expect.any(String) })
    expect(res.json.expiresAt).toMatch(/^\w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d UTC$/)
    expect(res.json.longExpiresAtTimestamp).toBeGreaterThan(res.json.expiresAtTimestamp)
    expect(res.json).not.toHaveProperty('errorCode')
    expect(res.headers.get('x-ratelimit-limit')).toBeNull()
    expect(s.ledger).toEqual([{ phone: req.phone, uuid: req.uuid, code: res.json.code, testType: 'confirmed', testDate: '2026-11-20', symptomDate: '2026-11-18', tzOffset: -300, at: expect.any(Number) }])
    const ledger = await (await fetch(`${s.url}/sandbox/ledger`)).json()
    expect(ledger).toHaveLength(1)
  })

  it('a batch of 3 valid items: 200, three codes in request order, three texted', async () => {
    const s = await sandbox()
    const items = [item(), item({ testType: 'likely', testDate: undefined, symptomDate: '2026-11-19' }), item({ testType: 'negative' })]
    const res = await batch(s, items)
    expect(res.status).toBe(200)
    expect(res.json.codes.map((c: { uuid: string }) => c.uuid)).toEqual(items.map((i) => i.uuid))
    expect(res.json).not.toHaveProperty('errorCode')
    expect(s.ledger.map((e) => e.uuid)).toEqual(items.map((i) => i.uuid))
    expect(s.stats).toMatchObject({ requests: 1, items: 3, issued: 3 })
  })

  it('more than 10 items: 400 batch_size_limit_exceeded, nothing issued; an empty batch is unparsable', async () => {
    const s = await sandbox()
    const big = await batch(s, Array.from({ length: 11 }, () => item()))
    expect(big.status).toBe(400)
    expect(big.json).toEqual({ error: 'batch size limit [10] exceeded', errorCode: 'batch_size_limit_exceeded' })
    const empty = await batch(s, [])
    expect(empty.status).toBe(400)
    expect(empty.json.errorCode).toBe('unparsable_request')
    expect(s.ledger).toEqual([])
  })

  it('is not atomic: an invalid phone in the middle fails alone, the others are texted, status is the failure\'s', async () => {
    const s = await sandbox()
    const items = [item(), item({ phone: '212-555-0100' }), item()]
    const res = await batch(s, items)
    expect(res.status).toBe(400)
    expect(res.json.errorCode).toBe('phone_number_invalid')
    expect(res.json.error).toMatch(/1 of 3/)
    expect(res.json.codes[0]).toMatchObject({ uuid: items[0].uuid, code: expect.any(String) })
    expect(res.json.codes[1]).toMatchObject({ uuid: items[1].uuid, errorCode: 'phone_number_invalid', error: expect.any(String) })
    expect(res.json.codes[1]).not.toHaveProperty('code')
    expect(res.json.codes[2]).toMatchObject({ uuid: items[2].uuid, code: expect.any(String) })
    expect(s.ledger.map((e) => e.uuid)).toEqual([items[0].uuid, items[2].uuid])
    expect(s.stats.itemErrors).toEqual({ phone_number_invalid: 1 })
  })

  const invalid: [string, Record<string, unknown>, string][] = [
    ['an unknown test type', { testType: 'positive' }, 'invalid_test_type'],
    ['no date', { testDate: undefined }, 'missing_date'],
    ['an impossible date', { testDate: '2026-02-30' }, 'invalid_date'],
    ['no phone', { phone: undefined }, 'missing_phone'],
    ['no uuid', { uuid: undefined }, 'unparsable_request'],
  ]
  for (const [what, over, errorCode] of invalid) {
    it(`refuses ${what} with 400 ${errorCode}`, async () => {
      const s = await sandbox()
      const res = await post(s, '/api/issue', item(over))
      expect(res.status).toBe(400)
      expect(res.json.errorCode).toBe(errorCode)
      expect(s.ledger).toEqual([])
    })
  }

  it('a reused uuid answers 409 uuid_already_exists and texts nothing again', async () => {
    const s = await sandbox()
    const req = item()
    expect((await post(s, '/api/issue', req)).status).toBe(200)
    const again = await post(s, '/api/issue', { ...req, phone: '+12125559999' })
    expect(again.status).toBe(409)
    expect(again.json).toMatchObject({ uuid: req.uuid, errorCode: 'uuid_already_exists' })
    const inBatch = await batch(s, [item(), req])
    expect(inBatch.status).toBe(409)
    expect(inBatch.json.codes[1].errorCode).toBe('uuid_already_exists')
    expect(s.ledger).toHaveLength(2)
    expect(s.textedPerPhone().get(req.phone)).toBe(1)
    expect(s.stats.conflicts409).toBe(2)
  })

  it('auth: a missing or wrong X-API-Key answers 401 and issues nothing', async () => {
    const s = await sandbox()
    for (const key of ['', 'wrong']) {
      const res = await post(s, '/api/issue', item(), key)
      expect(res.status).toBe(401)
      expect(res.json).toMatchObject({ errorCode: 'unauthorized', error: expect.any(String) })
    }
    expect(s.ledger).toEqual([])
  })

  it('malformed JSON answers 400 unparsable_request', async () => {
    const s = await sandbox()
    const res = await fetch(`${s.url}/api/issue`, { method: 'POST', headers: { 'x-api-key': KEY, 'content-type': 'application/json' }, body: '{"testType":' })
    expect(res.status).toBe(400)
    expect((await res.json()).errorCode).toBe('unparsable_request')
  })
})

describe('knobs', () => {
  it('quota: codes per clock-aligned minute, item-level quota_exceeded, then a plain-text 429 until the window ends', async () => {
    let t = Date.UTC(2026, 10, 23, 12, 0, 10) // 10 s into a window that ends at 12:01:00
    const s = await sandbox({ quota: { perMinute: 5 }, now: () => t })
    const reset = String(Date.UTC(2026, 10, 23, 12, 1, 0) / 1000)

    const first = await batch(s, [item(), item(), item()])
    expect(first.status).toBe(200)
    expect([first.headers.get('x-ratelimit-limit'), first.headers.get('x-ratelimit-remaining'), first.headers.get('x-ratelimit-reset')]).toEqual(['5', '2', reset])

    const second = await batch(s, [item(), item(), item()])
    expect(second.status).toBe(429)
    expect(second.json.errorCode).toBe('quota_exceeded')
    expect(second.json.codes.map((c: { errorCode?: string }) => c.errorCode ?? 'issued')).toEqual(['issued', 'issued', 'quota_exceeded'])
    expect(second.headers.get('x-ratelimit-remaining')).toBe('0')
    expect(s.ledger).toHaveLength(5)

    const refused = item()
    const limited = await post(s, '/api/issue', refused)
    expect(limited.status).toBe(429)
    expect(limited.headers.get('content-type')).toMatch(/^text\/plain/)
    expect(limited.text).toBe('Too Many Requests')
    expect(limited.headers.get('retry-after')).toBe('50')
    expect([limited.headers.get('x-ratelimit-limit'), limited.headers.get('x-ratelimit-remaining'), limited.headers.get('x-ratelimit-reset')]).toEqual(['5', '0', reset])
    expect(s.ledger).toHaveLength(5)

    t += 50_000 // 12:01:00: a new window
    const later = await post(s, '/api/issue', refused)
    expect(later.status).toBe(200)
    expect(later.headers.get('x-ratelimit-remaining')).toBe('4')
    expect(s.ledger).toHaveLength(6)
    expect(s.stats).toMatchObject({ status429: 2, issued: 6, itemErrors: { quota_exceeded: 1 } })
    expect(s.stats.status429ByWindow).toEqual({ '2026-11-23T12:00:00.000Z': 2 })
  })

  it('an injected sms_failure texts nothing and leaves the uuid unused: the same uuid succeeds once the knob is reset', async () => {
    const s = await sandbox({ failures: { sms_failure: 1 } })
    const req = item()
    const failed = await post(s, '/api/issue', req)
    expect(failed.status).toBe(500)
    expect(failed.json).toMatchObject({ uuid: req.uuid, errorCode: 'sms_failure' })
    expect(s.ledger).toEqual([])
    s.knobs.failures.sms_failure = 0
    const retried = await post(s, '/api/issue', req)
    expect(retried.status).toBe(200)
    expect(s.ledger.map((e) => e.uuid)).toEqual([req.uuid])
  })

  it('injected failures have their statuses and draw from the seed', async () => {
    const statuses = async () => {
      const s = await sandbox({ seed: 7, failures: { maintenance_mode: 0.2, sms_queue_full: 0.2, internal_server_error: 0.2 } })
      const res = await batch(s, Array.from({ length: 10 }, () => item()))
      return res.json.codes.map((c: { errorCode?: string }) => c.errorCode ?? 'issued')
    }
    const first = await statuses()
    expect(new Set(first).size).toBeGreaterThan(1)
    expect(await statuses()).toEqual(first)
    const s = await sandbox({ failures: { sms_queue_full: 1 } })
    expect((await post(s, '/api/issue', item())).status).toBe(503)
    s.knobs.failures = { maintenance_mode: 1 }
    expect((await post(s, '/api/issue', item())).status).toBe(429)
  })

  it('latency delays the answer, after the code was texted', async () => {
    const s = await sandbox({ latencyMs: 300 })
    const started = Date.now()
    const answer = post(s, '/api/issue', item())
    await new Promise((r) => setTimeout(r, 150))
    expect(s.ledger).toHaveLength(1)
    expect((await answer).status).toBe(200)
    expect(Date.now() - started).toBeGreaterThanOrEqual(290)
  })
})
