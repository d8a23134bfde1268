/**
 * The receipts engine on the work queue: a batch claimed in its transaction, applied receipts deleted, a receipt for no known
 * notification retried with the spec's backoff and then kept as unknown (failed_at), logged without personal data; one that does
 * not match what was sent refused for good; two workers (PostgreSQL) apply each receipt once.
 */
import { describe, expect, it } from 'vitest'
import { Writable } from 'node:stream'
import { events, stats } from '../../src/engine/queue.ts'
import { createLogger } from '../../src/log.ts'
import { receiptsEngine } from '../../src/messaging/receipts/engine.ts'
import { receiptsQueue } from '../../src/messaging/receipts/queue.ts'
import { onPostgres } from '../helpers/db.ts'
import { messagingWorld } from '../helpers/messaging.ts'
import { seedNotifications } from '../helpers/notifications.ts'

const w = messagingWorld()
let logged = ''
const log = createLogger('debug', new Writable({ write(chunk, _e, done) { logged += chunk; done() } }))
const go = () => new AbortController().signal
const step = (db = w.t.db) => receiptsEngine(log).step(db, go())
const receive = (rows: { notificationId?: string; ref?: string; status: string }[], provider = 'twilio') =>
  Promise.all(rows.map((r) => w.t.db.query(`INSERT INTO sms_receipts (notification_id, provider, provider_ref, status) VALUES ($1, $2, $3, $4)`,
    [r.notificationId ?? null, provider, r.ref ?? null, r.status])))
const status = async (id: string) => (await w.t.db.query('SELECT status FROM notifications WHERE id = $1', [id]))[0].status
const waiting = () => w.t.db.query(`SELECT id::text, attempts, retry_at, last_error, failed_at FROM sms_receipts ORDER BY id`)

describe('receipts engine', () => {
  it('applies receipts by id or provider reference, final over pending; deletes what it applied', async () => {
    const [a, b] = await seedNotifications(w.t.db, w.service, w.template.id, [{ at: new Date(), status: 'sending' }, { at: new Date(), status: 'sending' }])
    await w.t.db.query(`UPDATE notifications SET provider_ref = 'SM-b' WHERE id = $1`, [b])
    await receive([{ notificationId: a, status: 'pending' }, { notificationId: a, status: 'delivered' }, { notificationId: a, status: 'pending' },
      { ref: 'SM-b', status: 'temporary-failure' }])
    expect(await step()).toEqual({ applied: 4 })
    expect([await status(a), await status(b)]).toEqual(['delivered', 'temporary-failure'])
    expect(await waiting()).toEqual([])
    expect(await step()).toEqual({})
  })

  it('retries a receipt for no known notification with backoff, applies it once its send is recorded', async () => {
    const [a] = await seedNotifications(w.t.db, w.service, w.template.id, [{ at: new Date(), status: 'sending' }])
    await receive([{ ref: 'SM-late', status: 'delivered' }])
    expect(await step()).toEqual({ applied: 0, waiting: 1 })
    const [r] = await waiting()
    expect(r).toMatchObject({ attempts: 1, failed_at: null, last_error: 'no notification with this id or provider reference' })
    expect(new Date(r.retry_at).getTime()).toBeGreaterThan(Date.now() + 3000) // base 5 s, ±10%
    expect(await step()).toEqual({}) // backing off
    expect((await events(w.t.db, receiptsQueue, [r.id])).map((e) => e.kind)).toEqual(['retrying'])
    await w.t.db.query(`UPDATE notifications SET provider_ref = 'SM-late' WHERE id = $1`, [a])
    await w.t.db.query('UPDATE sms_receipts SET retry_at = now()')
    expect(await step()).toEqual({ applied: 1 })
    expect(await status(a)).toBe('delivered')
    expect(await waiting()).toEqual([])
  })

  it('keeps a receipt for no known notification as unknown (failed_at) after its attempts, logged without its reference', async () => {
    await receive([{ notificationId: '3f0c3c53-2f53-4b8e-8c4c-5d5d0a7f3f11', ref: 'SM-unknown-ref', status: 'delivered' }], 'vonage')
    const outcomes = [await step()]
    for (let i = 0; i < receiptsQueue.retry.maxAttempts - 1; i++) {
      await w.t.db.query('UPDATE sms_receipts SET retry_at = now()')
      outcomes.push(await step())
    }
    expect(outcomes.at(-1)).toEqual({ applied: 0, unknown: 1 })
    expect(outcomes.slice(0, -1).every((o) => o.waiting === 1)).toBe(true)
    const [r] = await waiting()
    expect(r).toMatchObject({ attempts: receiptsQueue.retry.maxAttempts, retry_at: null, failed_at: expect.any(Date) })
    expect(await stats(w.t.db, receiptsQueue)).toMatchObject({ waiting: 0, failed: 1 })
    expect(await step()).toEqual({})
    expect(logged).toContain('kept as unknown')
    expect(logged).toContain('vonage')
    expect(logged).not.toContain('SM-unknown-ref')
    expect(logged).not.toContain('3f0c3c53')
  })

  it('refuses for good a receipt that names a notification sent through another provider or as another reference, logged without either', async () => {
    const [a] = await seedNotifications(w.t.db, w.service, w.template.id, [{ at: new Date(), status: 'sending', provider: 'vonage' }])
    await w.t.db.query(`UPDATE notifications SET provider_ref = 'VON-ref-a' WHERE id = $1`, [a])
    await receive([{ notificationId: a, ref: 'SM-forged-ref', status: 'permanent-failure' }])
    await receive([{ notificationId: a, ref: 'VON-other-ref', status: 'permanent-failure' }], 'vonage')
    expect(await step()).toEqual({ applied: 0, refused: 2 })
    expect(await status(a)).toBe('sending')
    expect((await waiting()).map((r) => [r.attempts, r.failed_at !== null, r.last_error])).toEqual([
      [1, true, 'not the provider or reference its notification was sent with'], [1, true, 'not the provider or reference its notification was sent with']])
    expect(await step()).toEqual({})
    expect(logged).toContain('do not match what was sent')
    for (const s of ['SM-forged-ref', 'VON-other-ref', 'VON-ref-a', a.slice(0, 8)]) expect(logged).not.toContain(s)
  })

  it('claims nothing once stopped', async () => {
    await receive([{ ref: 'SM-x', status: 'delivered' }])
    const stop = new AbortController()
    stop.abort()
    expect(await receiptsEngine(log).step(w.t.db, stop.signal)).toEqual({})
    expect(await waiting()).toMatchObject([{ attempts: 0 }])
  })

  it.skipIf(!onPostgres)('two workers apply each receipt once, their batches disjoint', async () => {
    const ids = await seedNotifications(w.t.db, w.service, w.template.id, Array.from({ length: 3000 }, () => ({ at: new Date(), status: 'sending' })))
    await w.t.db.query(`INSERT INTO sms_receipts (notification_id, provider, status) SELECT unnest($1::uuid[]), 'twilio', 'delivered'`, [ids])
    const dbs = [w.t.connectAgain(), w.t.connectAgain()]
    const applied = await Promise.all(dbs.map(async (db) => {
      let n = 0
      for (let r = await step(db); r.applied; r = await step(db)) n += r.applied
      return n
    }))
    expect(applied[0] + applied[1]).toBe(3000)
    const [{ n }] = await w.t.db.query(`SELECT count(*)::int AS n FROM notifications WHERE status = 'delivered'`)
    expect(n).toBe(3000)
    expect(await waiting()).toEqual([])
  })
})
