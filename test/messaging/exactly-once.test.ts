/**
 * While retention moves notifications to history (two workers, small batches), another connection
 * computes the counts billing and status use, through notifications_all_time_view, again and again:
 * with nothing new sent they must never change. A batch whose insert and delete were not one
 * transaction would show its rows twice or not at all (GOV.UK Notify's bug). PostgreSQL: PGlite has one connection.
 */
import { describe, expect, it } from 'vitest'
import { createLogger } from '../../src/log.ts'
import { BILLABLE, BILLING_SQL, STATUS_SQL } from '../../src/messaging/facts/facts.ts'
import { runRetention } from '../../src/messaging/retention/retention.ts'
import { LocalStore } from '../../src/storage/local.ts'
import { onPostgres } from '../helpers/db.ts'
import { jobStore, messagingWorld } from '../helpers/messaging.ts'
import { seedNotifications, type Seed } from '../helpers/notifications.ts'

const w = messagingWorld()
const N = 6000

describe.skipIf(!onPostgres)('notifications_all_time_view during retention', () => {
  it('counts every notification exactly once, before, during and after each batch', async () => {
    const start = new Date('2026-10-01T04:00:00Z')
    const statuses = ['delivered', 'delivered', 'delivered', 'permanent-failure', 'temporary-failure', 'sending']
    const seeds: Seed[] = Array.from({ length: N }, (_, i) => ({ at: new Date(start.getTime() + i * 60_000), status: statuses[i % statuses.length],
      keyType: i % 10 === 0 ? 'test' : i % 10 === 1 ? 'team' : 'normal', units: 1 + (i % 3), provider: i % 4 ? 'twilio' : 'vonage' }))
    for (let i = 0; i < N; i += 2000) await seedNotifications(w.t.db, w.service, w.template.id, seeds.slice(i, i + 2000))
    const span = [w.service.id, start, new Date(start.getTime() + N * 60_000)]
    const reader = w.t.connectAgain()
    const counts = async () => {
      const billing = await reader.query(`SELECT sum(billable_units)::int AS units, sum(notifications_sent)::int AS sent FROM (${BILLING_SQL()}) f`, [...span, BILLABLE])
      const status = await reader.query(`SELECT status, sum(notification_count)::int AS n FROM (${STATUS_SQL()}) f GROUP BY 1 ORDER BY 1`, span)
      return JSON.stringify({ billing, status })
    }
    const baseline = await counts()

    let moving = true
    const store = new LocalStore(jobStore)
    const workers = [0, 1].map(() => runRetention(w.t.connectAgain(), { store, log: createLogger('silent'), asOf: new Date('2026-12-15T12:00:00Z'), batch: 25 }))
    const done = Promise.all(workers).finally(() => { moving = false })
    let reads = 0
    while (moving) {
      expect(await counts()).toBe(baseline)
      reads++
    }
    const results = await done
    expect(results.flat().reduce((n, r) => n + r.archived, 0)).toBe(N * 0.9)
    expect(await counts()).toBe(baseline)
    expect(reads).toBeGreaterThan(5) // the reads overlapped the moving
    const [{ n }] = await w.t.db.query(`SELECT count(*)::int AS n FROM notifications`)
    expect(n).toBe(0)
  })
})
