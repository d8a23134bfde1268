/** Billing and status facts: local days, test keys never billed, reruns idempotent, late statuses, monthly usage (API and facts agree). */
import { describe, expect, it } from 'vitest'
import { computeFacts, monthlyUsage } from '../../src/messaging/facts/facts.ts'
import { runRetention } from '../../src/messaging/retention/retention.ts'
import { createLogger } from '../../src/log.ts'
import { LocalStore } from '../../src/storage/local.ts'
import { callApi, jobStore, messagingWorld } from '../helpers/messaging.ts'
import { seedNotifications } from '../helpers/notifications.ts'

const w = messagingWorld()
const billing = () => w.t.db.query(`SELECT local_date::text AS day, provider, rate_multiplier::float AS multiplier, international, rate::float AS rate,
  billable_units::int AS units, notifications_sent::int AS sent FROM ft_billing ORDER BY 1, 2, 3`)
const statuses = () => w.t.db.query(`SELECT local_date::text AS day, key_type, status, notification_count::int AS n FROM ft_notification_status ORDER BY 1, 2, 3`)

describe('facts', () => {
  it('bills handed-over texts by local day, provider and multiplier; never test keys nor texts never handed over', async () => {
    await w.t.db.query(`INSERT INTO sms_rates (valid_from, rate) VALUES ('2026-01-01', 0.0079), ('2026-11-21', 0.01)`)
    await seedNotifications(w.t.db, w.service, w.template.id, [
      { at: '2026-11-20T04:59:00Z', units: 2 }, // 19 November in New York
      { at: '2026-11-20T05:00:00Z', units: 1 },
      { at: '2026-11-20T18:00:00Z', units: 3, provider: 'vonage' },
      { at: '2026-11-20T19:00:00Z', units: 1, status: 'permanent-failure' },
      { at: '2026-11-20T20:00:00Z', units: 2, international: true, multiplier: 2, phone: '+447700900123' },
      { at: '2026-11-20T21:00:00Z', keyType: 'test', units: 5 },
      { at: '2026-11-20T22:00:00Z', status: 'validation-failed' },
      { at: '2026-11-20T23:00:00Z', status: 'technical-failure' },
      { at: '2026-11-21T12:00:00Z', units: 1, keyType: 'team' },
    ])
    const run = await computeFacts(w.t.db, { from: '2026-11-19', to: '2026-11-21' })
    expect(run.days).toBe(3)
    expect(await billing()).toEqual([
      { day: '2026-11-19', provider: 'twilio', multiplier: 1, international: false, rate: 0.0079, units: 2, sent: 1 },
      { day: '2026-11-20', provider: 'twilio', multiplier: 1, international: false, rate: 0.0079, units: 2, sent: 2 },
      { day: '2026-11-20', provider: 'twilio', multiplier: 2, international: true, rate: 0.0079, units: 2, sent: 1 },
      { day: '2026-11-20', provider: 'vonage', multiplier: 1, international: false, rate: 0.0079, units: 3, sent: 1 },
      { day: '2026-11-21', provider: 'twilio', multiplier: 1, international: false, rate: 0.01, units: 1, sent: 1 },
    ])
    expect((await statuses()).filter((s) => s.day === '2026-11-20')).toEqual([
      { day: '2026-11-20', key_type: 'normal', status: 'delivered', n: 3 },
      { day: '2026-11-20', key_type: 'normal', status: 'permanent-failure', n: 1 },
      { day: '2026-11-20', key_type: 'normal', status: 'technical-failure', n: 1 },
      { day: '2026-11-20', key_type: 'normal', status: 'validation-failed', n: 1 },
    ])
    const usage = await monthlyUsage(w.t.db, w.service.id, 2026)
    expect(usage.map((m) => ({ ...m, cost: Number(m.cost.toFixed(6)) }))).toEqual([
      { month: '2026-11', notification_type: 'sms', rate: 0.0079, billable_units: 9, chargeable_units: 11, notifications_sent: 5, cost: 0.0869 },
      { month: '2026-11', notification_type: 'sms', rate: 0.01, billable_units: 1, chargeable_units: 1, notifications_sent: 1, cost: 0.01 },
    ])
    const api = await (await callApi(w, 'GET', '/v2/usage?year=2026')).json()
    expect(api).toMatchObject({ service_id: w.service.id, year: 2026, months: usage })
    expect((await callApi(w, 'GET', '/v2/usage?year=soon')).status).toBe(400)
  })

  it('gives the same rows when run again, and follows statuses that changed since', async () => {
    const ids = await seedNotifications(w.t.db, w.service, w.template.id, Array.from({ length: 10 }, () => ({ at: '2026-11-20T15:00:00Z', status: 'sending' })))
    const range = { from: '2026-11-20', to: '2026-11-20' }
    await computeFacts(w.t.db, range)
    const first = { billing: await billing(), statuses: await statuses() }
    expect(first.statuses).toEqual([{ day: '2026-11-20', key_type: 'normal', status: 'sending', n: 10 }])
    await computeFacts(w.t.db, range)
    expect({ billing: await billing(), statuses: await statuses() }).toEqual(first)

    // Receipts arrive after the facts were computed: the next run counts them where they are now.
    await w.t.db.query(`UPDATE notifications SET status = CASE WHEN id = ANY($1::uuid[]) THEN 'delivered' ELSE 'temporary-failure' END`, [ids.slice(0, 7)])
    await computeFacts(w.t.db, range)
    expect(await statuses()).toEqual([
      { day: '2026-11-20', key_type: 'normal', status: 'delivered', n: 7 },
      { day: '2026-11-20', key_type: 'normal', status: 'temporary-failure', n: 3 },
    ])
    expect(await billing()).toEqual(first.billing) // both statuses are billed

    // After retention moved them to history, the facts are the same.
    await runRetention(w.t.db, { store: new LocalStore(jobStore), log: createLogger('silent'), asOf: new Date('2026-12-15T12:00:00Z') })
    expect(await w.t.db.query(`SELECT 1 FROM notifications`)).toEqual([])
    const settled = { billing: await billing(), statuses: await statuses() }
    await computeFacts(w.t.db, range)
    expect({ billing: await billing(), statuses: await statuses() }).toEqual(settled)
  })

  it('recomputes the last 3 local days of each service when given no range (the nightly run)', async () => {
    await seedNotifications(w.t.db, w.service, w.template.id, [
      { at: '2026-11-19T15:00:00Z' }, { at: '2026-11-20T15:00:00Z' }, { at: '2026-11-22T15:00:00Z' }, { at: '2026-11-23T15:00:00Z' }])
    const run = await computeFacts(w.t.db, { asOf: new Date('2026-11-23T18:00:00Z') })
    expect(run.days).toBe(3)
    expect((await statuses()).map((s) => s.day)).toEqual(['2026-11-20', '2026-11-22'])
  })

  it('stops before the next service-day when told; each day computed is whole', async () => {
    await seedNotifications(w.t.db, w.service, w.template.id, [{ at: '2026-11-20T15:00:00Z' }, { at: '2026-11-21T15:00:00Z' }])
    const stop = new AbortController()
    const run = await computeFacts(w.t.db, { from: '2026-11-20', to: '2026-11-22' }, async () => stop.abort(), stop.signal)
    expect(run).toMatchObject({ days: 1, stopped: true })
    expect((await statuses()).map((s) => s.day)).toEqual(['2026-11-20'])
  })
})
