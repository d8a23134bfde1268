/**
 * Opt-outs: a resident's STOP through the SMS sandbox stops the service's next text (the API's 400, a bulk job's row refused,
 * a text accepted before it not handed over), START lets texts through again; the carriers' keywords, whole and in any case;
 * per service; and exposure notification sends no code to a resident opted out of any service.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import notifyClient from 'notifications-node-client'
import { createLogger } from '../../src/log.ts'
import { setInboundNumber } from '../../src/messaging/inbound/numbers.ts'
import { OPTED_OUT } from '../../src/messaging/inbound/optouts.ts'
import { sendEngine } from '../../src/messaging/send/engine.ts'
import { registerProviders } from '../../src/messaging/send/providers.ts'
import { TwilioSms } from '../../src/messaging/send/twilio.ts'
import { createKey, createService, createTemplate } from '../../src/messaging/services.ts'
import { linkRows } from '../helpers/casesync.ts'
import { exposureWorld, states } from '../helpers/exposure.ts'
import { row, tempDir } from '../helpers/files.ts'
import { INBOUND_NUMBER, inboundWorld, reply } from '../helpers/inbound.ts'
import { callApi, messagingWorld, sealer, secrets } from '../helpers/messaging.ts'

const { NotifyClient } = notifyClient as { NotifyClient: new (base: string, key: string) => any }
const w = messagingWorld()
const iw = inboundWorld(w)
const RESIDENT = '+12125550123'
const personalisation = { name: 'Ada', ref: 'X1' }
const text = (phone = RESIDENT, key = w.keys.normal) => callApi(w, 'POST', '/v2/notifications/sms', { phone_number: phone, template_id: w.template.id, personalisation }, key)
const optedOut = () => w.t.db.query(`SELECT service_id::text, keyword FROM sms_opt_outs ORDER BY opted_out_at`)

beforeEach(async () => {
  await setInboundNumber(w.t.db, w.service.id, INBOUND_NUMBER)
})

describe('opt-outs', () => {
  it("a resident's STOP stops the next text through the API; START allows it again", async () => {
    const client = new NotifyClient(w.url, w.keys.normal)
    await client.sendSms(w.template.id, RESIDENT, { personalisation })
    expect(await reply(iw, RESIDENT, 'STOP')).toMatchObject({ status: 200 })
    const refused = await client.sendSms(w.template.id, RESIDENT, { personalisation }).catch((e: { response: { status: number; data: unknown } }) => e.response)
    expect(refused.status).toBe(400)
    expect(refused.data).toEqual({ status_code: 400, errors: [{ error: 'BadRequestError', message: OPTED_OUT }] })
    expect(OPTED_OUT).toBe('The recipient has opted out of texts from this service (replied STOP)')
    // However the number is written, and with the other key types too; nothing is created for it.
    expect((await text('(212) 555-0123')).status).toBe(400)
    expect((await text(RESIDENT, w.keys.team)).status).toBe(400)
    expect((await text(RESIDENT, w.keys.test)).status).toBe(400)
    expect(await w.t.db.query(`SELECT count(*)::int AS n FROM notifications`)).toEqual([{ n: 1 }])
    // Others are still texted; the refused ones did not count against today's limit.
    expect((await text('+12125550124')).status).toBe(201)
    expect(await w.t.db.query(`SELECT texts FROM daily_counts`)).toEqual([{ texts: 2 }])
    expect(await reply(iw, RESIDENT, 'start', { provider: 'vonage' })).toMatchObject({ status: 204 })
    expect(await optedOut()).toEqual([])
    expect((await client.sendSms(w.template.id, RESIDENT, { personalisation })).status).toBe(201)
  })

  it("takes the carriers' keywords as the whole text in any case, and only them", async () => {
    const keywords = ['stop', ' StopAll ', 'UNSUBSCRIBE', 'cancel\n', 'End', 'quit']
    for (const [i, k] of keywords.entries()) await reply(iw, `+1212555020${i}`, k)
    for (const k of ['Stop texting me please', 'STOP!', 'do not stop', 'ok']) await reply(iw, '+12125550299', k)
    expect((await optedOut()).map((r) => r.keyword).sort()).toEqual(['CANCEL', 'END', 'QUIT', 'STOP', 'STOPALL', 'UNSUBSCRIBE'])
    expect((await text('+12125550299')).status).toBe(201)
    await reply(iw, '+12125550200', 'Unstop')
    expect((await optedOut()).map((r) => r.keyword).sort()).toEqual(['CANCEL', 'END', 'QUIT', 'STOPALL', 'UNSUBSCRIBE'])
    expect((await text('+12125550200')).status).toBe(201)
  })

  it('is per service: a STOP to one service does not stop another', async () => {
    const other = await createService(w.t.db, { name: 'Other county' })
    const template = await createTemplate(w.t.db, other.id, 'Hello', 'Hello from the county', 'tester')
    const key = (await createKey(w.t.db, secrets, other.id, 'live', 'normal')).key
    await reply(iw, RESIDENT, 'STOP')
    expect((await new NotifyClient(w.url, key).sendSms(template.id, RESIDENT, {})).status).toBe(201)
    expect((await text()).status).toBe(400)
  })

  it("refuses an opted-out number's row when a bulk job is checked", async () => {
    await reply(iw, RESIDENT, 'STOP')
    const csv = `phone number,name,ref\n+12125550124,Ada,A\n${RESIDENT},Bea,B\n+12125550125,Cy,C\n`
    const res = await callApi(w, 'POST', '/v2/jobs', { template_id: w.template.id, csv, filename: 'results.csv' })
    expect(res.status).toBe(400)
    expect(await res.json()).toEqual({ status_code: 400, errors: [{ error: 'ValidationError', message: `row 3: ${OPTED_OUT}` }] })
    await reply(iw, RESIDENT, 'START')
    expect((await callApi(w, 'POST', '/v2/jobs', { template_id: w.template.id, csv, filename: 'results.csv' })).status).toBe(201)
  })

  it('does not hand over a text accepted before the STOP: permanent-failure, opted out', async () => {
    const before = await (await text()).json() as { id: string }
    const other = await (await text('+12125550124')).json() as { id: string }
    await reply(iw, RESIDENT, 'STOP')
    const provider = new TwilioSms({ url: iw.twilio.url, accountSid: 'ACtest', authToken: 'token', timeoutMs: 2000 })
    try {
      await registerProviders(w.t.db, ['twilio'])
      const engine = sendEngine({ providers: [provider], sealer, region: 'US', concurrency: 4, recoverySeconds: 300, log: createLogger('silent'), workerId: 'test' })
      await engine.step(w.t.db, new AbortController().signal)
    } finally {
      await provider.close()
    }
    const rows = await w.t.db.query(`SELECT id::text, status, failure_reason, sent_at FROM notifications ORDER BY created_at`)
    expect(rows).toEqual([
      { id: before.id, status: 'permanent-failure', failure_reason: 'opted out', sent_at: null },
      { id: other.id, status: 'sending', failure_reason: null, sent_at: expect.any(Date) },
    ])
    expect(iw.twilio.ledger.map((e) => e.to)).toEqual(['+12125550124'])
    const got = (await new NotifyClient(w.url, w.keys.normal).getNotificationById(before.id)).data
    expect(got.status).toBe('permanent-failure')
  })

  describe('exposure notification', () => {
    let dir: { dir: string; cleanup: () => void }
    beforeEach(() => {
      dir = tempDir()
    })
    afterEach(() => dir.cleanup())
    let n = 0
    const positive = (phone: string) => row(3, { PIDPATIENTKEY: `OPT-${++n}`, PIDCOUNTYCODE: '1', PIDHOMEPHONE: phone })

    it('sends no code to a resident opted out of any service, at the phone check or after it', async () => {
      const x = await exposureWorld()
      await reply(iw, '+15550100001', 'STOP')
      await linkRows(w.t.db, dir.dir, [positive('5550100001'), positive('5550100002'), positive('5550100003')])
      // Through intake and the phone check only; then the third resident opts out before the codes are issued.
      const engines = x.worker('A')
      for (const e of [engines.intake, engines.check]) while (Object.keys(await e.step(w.t.db, new AbortController().signal)).length);
      await reply(iw, '+15550100003', 'quit')
      await x.run(w.t.db)
      expect(await states(w.t.db)).toEqual({ issued: 1, 'not_sent:opted_out': 2 })
      expect(x.enx.ledger.map((e) => e.phone)).toEqual(['+15550100002'])
      expect(x.lookup.stats.requests).toBe(2) // no lookup paid for the number opted out before its check
      const events = await w.t.db.query(`SELECT detail FROM exposure_events WHERE kind = 'not_sent'`)
      expect(events).toEqual([{ detail: { reason: 'opted_out' } }, { detail: { reason: 'opted_out' } }])
    })
  })
})
