/**
 * Failure reasons: texts to the SMS sandbox's failing numbers, through Twilio's and Vonage's APIs and
 * Herald's real adapters and receipt routes, end with the status, the reason a person can act on and
 * the provider's code; the reason shows in the API (and the official client still reads the
 * notification), in reports, in the console's activity, and goes with retention to history.
 */
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import type { FastifyInstance } from 'fastify'
import { parse } from 'csv-parse/sync'
import notifyClient from 'notifications-node-client'
import { consoleFor } from '../../src/console/index.ts'
import { startHttpServer } from '../../src/http/server.ts'
import { serveAtOwnUrl } from '../helpers/http.ts'
import { createLogger } from '../../src/log.ts'
import { serviceActivity } from '../../src/messaging/activity.ts'
import { receiptsEngine } from '../../src/messaging/receipts/engine.ts'
import { receiptRoutes } from '../../src/messaging/receipts/routes.ts'
import { REPORT_HEADER, reportCsv } from '../../src/messaging/reports/report.ts'
import { runRetention } from '../../src/messaging/retention/retention.ts'
import { sendEngine } from '../../src/messaging/send/engine.ts'
import { receiptFailure, twilioFailure, vonageReceiptFailure, vonageSubmitFailure } from '../../src/messaging/send/failure-reasons.ts'
import { TwilioSms } from '../../src/messaging/send/twilio.ts'
import { VonageSms } from '../../src/messaging/send/vonage.ts'
import type { SmsSandbox } from '../../src/sandbox/sms/server.ts'
import { LocalStore } from '../../src/storage/local.ts'
import { makeUser, Visitor } from '../helpers/console.ts'
import { SECRET } from '../helpers/exposure.ts'
import { callApi, config, jobStore, messagingWorld, sealer, smsProviders } from '../helpers/messaging.ts'

const { NotifyClient } = notifyClient as { NotifyClient: new (base: string, key: string) => any }
const w = messagingWorld()
const log = createLogger('silent')
let receiptsApp: FastifyInstance
let consoleApp: FastifyInstance
let publicUrl: string
let consoleUrl: string
let twilio: SmsSandbox
let vonage: SmsSandbox
let providers: (TwilioSms | VonageSms)[]

beforeAll(async () => {
  ;({ url: publicUrl, app: receiptsApp } = await serveAtOwnUrl((url) => [
    receiptRoutes({ db: w.t.db, log, publicUrl: url, secret: SECRET, twilioAuthToken: 'token' })]))
  consoleApp = await startHttpServer('127.0.0.1', 0, [consoleFor(config, w.t.db, log)])
  const c = consoleApp.server.address()
  consoleUrl = `http://127.0.0.1:${typeof c === 'object' && c ? c.port : 0}`
})
afterAll(async () => {
  await receiptsApp?.close()
  await consoleApp?.close()
})
let sms: Awaited<ReturnType<typeof smsProviders>>
beforeEach(async () => {
  sms = await smsProviders(w.t.db, publicUrl, 5000)
  ;({ twilio, vonage, providers } = sms)
})
afterEach(async () => sms.close())

const text = (phone: string) =>
  new NotifyClient(w.url, w.keys.normal).sendSms(w.template.id, phone, { personalisation: { name: 'Ada', ref: 'X' } })
    .then((r: { data: { id: string } }) => r.data.id as string)
const OPEN = ['created', 'sending', 'pending', 'sent']

/** Sends every created text through one provider only, then applies receipts until none is left open. */
async function sendThrough(provider: 'twilio' | 'vonage', ids: string[]) {
  const only = providers.filter((p) => p.name === provider)
  await sendEngine({ providers: only, sealer, region: 'US', concurrency: 8, recoverySeconds: 300, log, workerId: 'test' })
    .step(w.t.db, new AbortController().signal)
  const end = Date.now() + 15_000
  for (;;) {
    await receiptsEngine(log).step(w.t.db, new AbortController().signal)
    const open = await w.t.db.query(`SELECT count(*)::int AS n FROM notifications WHERE id = ANY($1::uuid[]) AND status = ANY($2::text[])`, [ids, OPEN])
    if (open[0].n === 0) return
    if (Date.now() > end) throw new Error('receipts did not come')
    await new Promise((r) => setTimeout(r, 25))
  }
}

const outcome = async (id: string) =>
  (await w.t.db.query(`SELECT status, failure_reason, failure_code FROM notifications WHERE id = $1`, [id]))[0]

// The sandbox's numbers (src/sandbox/sms/README.md) and what each provider says of them.
const CASES: [number: string, twilio: [string, string | null, string | null], vonage: [string, string | null, string | null]][] = [
  ['+1 212 555 0100', ['delivered', null, null], ['delivered', null, null]],
  ['+1 212 555 7000', ['permanent-failure', 'invalid number', 'twilio 30005'], ['permanent-failure', 'invalid number', 'vonage err-code 3']],
  ['+1 212 555 7100', ['temporary-failure', 'unreachable', 'twilio 30003'], ['temporary-failure', 'unreachable', 'vonage err-code 2']],
  // Refused at hand-over (the provider's answer to the send), not by a receipt.
  ['+1 212 555 7300', ['permanent-failure', 'invalid number', 'twilio 21211'], ['permanent-failure', 'invalid number', 'vonage status 6']],
  // Vonage's receipts do not tell a landline from any other unreachable destination.
  ['+1 212 555 7400', ['permanent-failure', 'landline', 'twilio 30006'], ['permanent-failure', 'unreachable', 'vonage err-code 12']],
  ['+1 212 555 7600', ['permanent-failure', 'carrier blocked', 'twilio 30007'], ['permanent-failure', 'carrier blocked', 'vonage err-code 14']],
  // Twilio refuses the send to a number that replied STOP; Vonage takes it and fails it in the receipt.
  ['+1 212 555 7700', ['permanent-failure', 'opted out', 'twilio 21610'], ['permanent-failure', 'opted out', 'vonage err-code 9']],
]

describe('failure reasons', () => {
  for (const provider of ['twilio', 'vonage'] as const) {
    it(`through ${provider}: each failing number ends with its status, reason and the provider's code`, async () => {
      const ids: string[] = []
      for (const [number] of CASES) ids.push(await text(number))
      await sendThrough(provider, ids)
      const got = await Promise.all(ids.map(outcome))
      expect(got.map((g) => [g.status, g.failure_reason, g.failure_code]))
        .toEqual(CASES.map((c) => (provider === 'twilio' ? c[1] : c[2])))
      // The hand-over refusals never reached the ledger; the rest did.
      expect((provider === 'twilio' ? twilio : vonage).ledger).toHaveLength(provider === 'twilio' ? 5 : 6)
    })
  }

  it('shows the reason in GET /v2/notifications/{id} (null when none), and the official client still reads it', async () => {
    const [landline, fine] = [await text('+1 212 555 7400'), await text('+1 212 555 0100')]
    await sendThrough('twilio', [landline, fine])
    const res = await callApi(w, 'GET', `/v2/notifications/${landline}`)
    expect(res.status).toBe(200)
    expect(await res.json()).toMatchObject({ id: landline, status: 'permanent-failure', failure_reason: 'landline' })
    expect((await (await callApi(w, 'GET', `/v2/notifications/${fine}`)).json()).failure_reason).toBeNull()
    const client = new NotifyClient(w.url, w.keys.normal)
    const got = (await client.getNotificationById(landline)).data
    expect(got).toMatchObject({ id: landline, type: 'sms', status: 'permanent-failure', phone_number: '+1 212 555 7400', failure_reason: 'landline' })
    const list = (await client.getNotifications('sms', 'failed')).data.notifications
    expect(list.map((n: { id: string; failure_reason: string }) => [n.id, n.failure_reason])).toEqual([[landline, 'landline']])
  })

  it('puts a Failure reason column in reports, and retention carries the reason and code to history', async () => {
    const [blocked, fine] = [await text('+1 212 555 7600'), await text('+1 212 555 0100')]
    await sendThrough('vonage', [blocked, fine])
    const csv = async () => {
      let s = ''
      for await (const chunk of reportCsv(w.t.db, sealer, { serviceId: w.service.id, from: '2000-01-01', to: '2100-01-01' })) s += chunk
      return parse(s, { columns: true }) as Record<string, string>[]
    }
    expect(REPORT_HEADER).toContain('Failure reason')
    const before = await csv()
    expect(before.map((r) => [r['Phone number'], r.Status, r['Failure reason']]).sort()).toEqual([
      ["'+1 212 555 0100", 'delivered', ''], ["'+1 212 555 7600", 'permanent-failure', 'carrier blocked']])

    await w.t.db.query(`UPDATE notifications SET created_at = now() - interval '30 days'`)
    const done = await runRetention(w.t.db, { store: new LocalStore(jobStore), log, asOf: new Date() })
    expect(done.find((x) => x.type === 'sms')?.archived).toBe(2)
    const [h] = await w.t.db.query(`SELECT status, failure_reason, failure_code FROM notification_history WHERE id = $1`, [blocked])
    expect(h).toEqual({ status: 'permanent-failure', failure_reason: 'carrier blocked', failure_code: 'vonage err-code 14' })
    const after = await csv()
    expect(after.map((x) => [x['Phone number'], x['Failure reason']]).sort()).toEqual([['', ''], ['', 'carrier blocked']])
  })

  it("shows the reason beside a failed status in the console's activity", async () => {
    const [optedOut, fine] = [await text('+1 212 555 7700'), await text('+1 212 555 0100')]
    await sendThrough('vonage', [optedOut, fine])
    const page = await serviceActivity(w.t.db, sealer, w.service.id)
    expect(page.rows.map((r) => [r.phone, r.status, r.failureReason]).sort()).toEqual([
      ['+1 212 555 0100', 'delivered', null], ['+1 212 555 7700', 'permanent-failure', 'opted out']])
    await makeUser(w.t.db, 'viewer@agency.example', { services: { [w.service.id]: ['view_activity'] } })
    const v = await new Visitor(consoleUrl).signIn('viewer@agency.example')
    const failed = await v.get(`/services/${w.service.id}/activity?status=failed`)
    expect(failed.status).toBe(200)
    expect(failed.html).toMatch(/permanent-failure<br><span class="text-base">Reason: opted out<\/span>/)
    expect(failed.html).not.toContain('+1 212 555 0100')
  })

  it('maps each code as the providers document it; an unknown code is kept with the reason unknown', () => {
    expect(twilioFailure(30006)).toEqual({ reason: 'landline', code: 'twilio 30006' })
    expect(twilioFailure('21614')).toEqual({ reason: 'landline', code: 'twilio 21614' })
    expect(twilioFailure('21408')).toEqual({ reason: 'provider error', code: 'twilio 21408' })
    expect(twilioFailure('30004')?.reason).toBe('carrier blocked')
    expect(twilioFailure('39999')).toEqual({ reason: 'unknown', code: 'twilio 39999' })
    expect(twilioFailure(undefined)).toBeNull()
    expect(vonageReceiptFailure('0')).toBeNull()
    expect(vonageReceiptFailure('4')?.reason).toBe('carrier blocked')
    expect(vonageReceiptFailure('7')?.reason).toBe('unreachable')
    expect(vonageReceiptFailure('15')?.reason).toBe('provider error')
    expect(vonageSubmitFailure('3')).toEqual({ reason: 'invalid number', code: 'vonage status 3' })
    // The same number means different things in a receipt and in the answer to a send.
    expect(vonageSubmitFailure('9')?.reason).toBe('provider error')
    expect(vonageReceiptFailure('9')?.reason).toBe('opted out')
    expect(receiptFailure('twilio', 'temporary-failure', null)).toEqual({ reason: 'unknown', code: null })
    expect(receiptFailure('twilio', 'delivered', null)).toBeNull()
    expect(receiptFailure('vonage', 'pending', '0')).toBeNull()
  })
})
