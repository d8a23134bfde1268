/** The Twilio Lookup sandbox answers in Twilio's v2 format; a US number's last four digits pick the outcome. */
import { afterEach, describe, expect, it } from 'vitest'
import { startLookupSandbox, type LookupSandbox, type LookupSandboxOptions } from '../../src/sandbox/lookup/server.ts'

const SID = 'ACsandbox0000000000000000000000000'
const TOKEN = 'sandbox-token'
const AUTH = 'Basic ' + Buffer.from(`${SID}:${TOKEN}`).toString('base64')
const open: LookupSandbox[] = []
afterEach(async () => {
  await Promise.all(open.splice(0).map((s) => s.close()))
})

async function sandbox(opts: Partial<LookupSandboxOptions> = {}): Promise<LookupSandbox> {
  const s = await startLookupSandbox({ accountSid: SID, authToken: TOKEN, ...opts })
  open.push(s)
  return s
}

async function lookup(s: LookupSandbox, number: string, auth = AUTH, fields = 'line_type_intelligence') {
  const res = await fetch(`${s.url}/v2/PhoneNumbers/${encodeURIComponent(number)}?Fields=${fields}`, { headers: { authorization: auth } })
  return { status: res.status, headers: res.headers, body: await res.json() }
}

describe('line types by the last four digits', () => {
  const ranges: [string, string][] = [
    ['+12125550100', 'mobile'], ['+12125554999', 'mobile'], ['+12125555000', 'landline'], ['+12125556123', 'fixedVoip'],
    ['+12125557999', 'nonFixedVoip'], ['+12125559500', 'mobile'], ['+447700900123', 'mobile'],
  ]
  for (const [number, type] of ranges) {
    it(`${number} is ${type}`, async () => {
      const s = await sandbox()
      const { status, body } = await lookup(s, number)
      expect(status).toBe(200)
      expect(body).toMatchObject({ phone_number: number, valid: true, validation_errors: [], caller_name: null, sim_swap: null, call_forwarding: null })
      expect(body.line_type_intelligence).toMatchObject({ type, carrier_name: expect.any(String), error_code: null })
      expect(body.url).toBe(`${s.url}/v2/PhoneNumbers/${number}`)
    })
  }

  it('answers the formats of a US number and takes 10 national digits as US', async () => {
    const s = await sandbox()
    const { body } = await lookup(s, '2125550100')
    expect(body).toMatchObject({ phone_number: '+12125550100', calling_country_code: '1', country_code: 'US', national_format: '(212) 555-0100', valid: true })
    expect((await lookup(s, '+447700900123')).body).toMatchObject({ calling_country_code: '44', country_code: 'GB' })
  })

  it('without Fields=line_type_intelligence the package is null, as in Twilio', async () => {
    const s = await sandbox()
    const { body } = await lookup(s, '+12125550100', AUTH, '')
    expect(body).toMatchObject({ valid: true, line_type_intelligence: null })
  })
})

describe('invalid numbers and planned failures', () => {
  it('80–84 is valid:false INVALID_BUT_POSSIBLE with HTTP 200, not 404', async () => {
    const s = await sandbox()
    const { status, body } = await lookup(s, '+12125558042')
    expect(status).toBe(200)
    expect(body).toMatchObject({ phone_number: '+12125558042', valid: false, validation_errors: ['INVALID_BUT_POSSIBLE'], line_type_intelligence: null })
  })

  it('a short number is TOO_SHORT and letters are NOT_A_NUMBER', async () => {
    const s = await sandbox()
    expect((await lookup(s, '+1212555')).body).toMatchObject({ valid: false, validation_errors: ['TOO_SHORT'], line_type_intelligence: null })
    expect((await lookup(s, 'call-me')).body).toMatchObject({ valid: false, validation_errors: ['NOT_A_NUMBER'], line_type_intelligence: null })
  })

  it('85–89: the first lookup answers 429 20429 with Retry-After, later ones mobile', async () => {
    const s = await sandbox()
    const first = await lookup(s, '+12125558700')
    expect(first.status).toBe(429)
    expect(first.headers.get('retry-after')).toBe('1')
    expect(first.body).toMatchObject({ code: 20429, message: 'Too Many Requests', status: 429 })
    const again = await lookup(s, '+12125558700')
    expect(again.status).toBe(200)
    expect(again.body.line_type_intelligence.type).toBe('mobile')
    expect(s.stats.status429).toBe(1)
    expect(s.stats.byNumber.get('+12125558700')).toBe(2)
  })

  it('90–94: the first lookup answers 500 20500, later ones mobile; another number of the range fails first too', async () => {
    const s = await sandbox()
    const first = await lookup(s, '+12125559100')
    expect(first.status).toBe(500)
    expect(first.body).toMatchObject({ code: 20500, message: 'Internal Server Error', status: 500 })
    expect((await lookup(s, '+12125559100')).body.line_type_intelligence.type).toBe('mobile')
    expect((await lookup(s, '+12125559400')).status).toBe(500)
    expect(s.stats.status5xx).toBe(2)
  })
})

describe('auth and knobs', () => {
  it('wrong or missing credentials answer 401 20003', async () => {
    const s = await sandbox()
    for (const auth of ['', 'Basic ' + Buffer.from(`${SID}:nope`).toString('base64')]) {
      const { status, body } = await lookup(s, '+12125550100', auth)
      expect(status).toBe(401)
      expect(body).toMatchObject({ code: 20003, message: 'Authenticate', status: 401, more_info: expect.any(String) })
    }
    expect(s.stats.byNumber.size).toBe(0)
    const stats = await (await fetch(`${s.url}/sandbox/stats`)).json()
    expect(stats).toMatchObject({ requests: 2, byNumber: {} })
  })

  it('maxConcurrent: requests beyond it in flight answer 429 20429; a slot frees when an answer is sent', async () => {
    const s = await sandbox({ maxConcurrent: 2, latencyMs: 300 })
    const answers = await Promise.all(['+12125550101', '+12125550102', '+12125550103', '+12125550104'].map((n) => lookup(s, n)))
    expect(answers.map((a) => a.status).sort()).toEqual([200, 200, 429, 429])
    expect(answers.find((a) => a.status === 429)!.body).toMatchObject({ code: 20429, status: 429 })
    expect(s.stats.status429).toBe(2)
    expect((await lookup(s, '+12125550103')).status).toBe(200)
  })

  it('latency delays every answer', async () => {
    const s = await sandbox({ latencyMs: 250 })
    const started = Date.now()
    await lookup(s, '+12125550100')
    expect(Date.now() - started).toBeGreaterThanOrEqual(240)
  })
})
