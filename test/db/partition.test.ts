/**
 * Partitioning notifications and history by day (herald db partition-by-day): every row kept, nothing
 * re-indexed at the swap, and the API, sending, receipts, retention, reports, facts and the nightly
 * run working on the partitioned tables; a second run does nothing. PGlite partitions as PostgreSQL does.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { FastifyInstance } from 'fastify'
import { parse } from 'csv-parse/sync'
import { boundsLeft, ensureDayPartitions, partitionByDay, prepare, swap } from '../../src/db/optional/partition-by-day.ts'
import { computeFacts } from '../../src/messaging/facts/facts.ts'
import { receiptsEngine } from '../../src/messaging/receipts/engine.ts'
import { receiptRoutes } from '../../src/messaging/receipts/routes.ts'
import { reportCsv } from '../../src/messaging/reports/report.ts'
import { nightlyEngine } from '../../src/messaging/retention/nightly.ts'
import { runRetention } from '../../src/messaging/retention/retention.ts'
import { sendEngine } from '../../src/messaging/send/engine.ts'
import { createLogger } from '../../src/log.ts'
import { LocalStore } from '../../src/storage/local.ts'
import { onPostgres } from '../helpers/db.ts'
import { SECRET } from '../helpers/exposure.ts'
import { serveAtOwnUrl } from '../helpers/http.ts'
import { callApi, jobStore, messagingWorld, sealer, smsProviders } from '../helpers/messaging.ts'
import { seedNotifications, viewCounts } from '../helpers/notifications.ts'
import { until } from '../helpers/wait.ts'

const TZ = 'America/New_York'
const DAY = 86400_000
const w = messagingWorld()
const log = createLogger('silent')
const store = new LocalStore(jobStore)
const go = () => new AbortController().signal
const db = () => w.t.db
const counts = async () => (await db().query(`SELECT (SELECT count(*)::int FROM notifications) AS notifications,
  (SELECT count(*)::int FROM notification_history) AS history`))[0]
const whereIs = async (table: string, id: string) => (await db().query(`SELECT tableoid::regclass::text AS p FROM ${table} WHERE id = $1`, [id]))[0]?.p
// The table's own indexes, not those prepared beside them for the swap.
const indexCount = async (table: string) => (await db().query(`SELECT count(*)::int AS n FROM pg_index
  WHERE indrelid = $1::regclass AND indexrelid::regclass::text NOT LIKE '%\\_by\\_day'`, [table]))[0].n
const localDay = (d: Date) => d.toLocaleDateString('en-CA', { timeZone: TZ })

let receiptsApp: FastifyInstance
let publicUrl: string
beforeAll(async () => {
  ;({ url: publicUrl, app: receiptsApp } = await serveAtOwnUrl((url) => [
    receiptRoutes({ db: w.t.db, log, publicUrl: url, secret: SECRET, twilioAuthToken: 'token' })]))
})
afterAll(async () => receiptsApp?.close())

describe('partition by day', () => {
  it('drops a bound an interrupted run left on unpartitioned tables before it passes, and leaves one far ahead', async () => {
    const soon = new Date(Date.now() + 3600_000).toISOString()
    await db().exec(`ALTER TABLE notifications ADD CONSTRAINT notifications_partition_bound CHECK (created_at < '${soon}') NOT VALID`)
    await db().exec(`ALTER TABLE notification_history ADD CONSTRAINT notification_history_partition_bound CHECK (created_at < '2999-01-01') NOT VALID`)
    expect(await ensureDayPartitions(db(), { timezone: TZ })).toEqual({ created: [], boundsDropped: ['notifications'] })
    expect((await db().query(`SELECT conname FROM pg_constraint WHERE conname LIKE '%partition_bound' ORDER BY 1`)).map((r) => r.conname))
      .toEqual(['notification_history_partition_bound'])
    await db().exec(`ALTER TABLE notification_history DROP CONSTRAINT notification_history_partition_bound`)
  })

  // PostgreSQL only: PGlite admits one connection, so nothing else can hold the tables' lock there.
  it.skipIf(!onPostgres)('gives up the swap when the tables stay locked past its lock timeout, leaving them as they were; a rerun keeps the validated bound', async () => {
    const at = await prepare(db(), { timezone: TZ })
    // A long reader (a report, say) holds the tables: the swap must not queue in front of every sender behind it.
    const other = w.t.connectAgain()
    let release!: () => void
    let reading!: () => void
    const held = new Promise<void>((r) => { release = r })
    const started = new Promise<void>((r) => { reading = r })
    const reader = other.transaction(async (tx) => {
      await tx.query('SELECT count(*) FROM notifications_all_time_view')
      reading()
      await held
    })
    await started
    const t0 = Date.now()
    await expect(db().transaction((tx) => swap(tx, at, { timezone: TZ, lockTimeoutMs: 300 }))).rejects.toThrow(/lock timeout/)
    expect(Date.now() - t0).toBeLessThan(5000)
    release()
    await reader
    expect((await db().query(`SELECT relkind FROM pg_class WHERE relname IN ('notifications', 'notification_history')`)).map((r) => r.relkind)).toEqual(['r', 'r'])
    expect((await boundsLeft(db())).map((b) => b.at)).toEqual([at, at])
  })

  it('keeps every row, builds no index under the lock, and the API, sending, receipts, retention, reports and facts work on it', { timeout: 180_000 }, async () => {
    // A past: rows 20, 10 and 3 days old and today's, some with a provider's reference; retention (7 days) moves the old ones to history.
    const at = (days: number) => new Date(Date.now() - days * DAY)
    const [old, , recent, today] = await seedNotifications(db(), w.service, w.template.id,
      [{ at: at(20) }, { at: at(10), status: 'permanent-failure' }, { at: at(3), status: 'sending' }, { at: at(0), status: 'sending' }])
    await db().query(`UPDATE notifications SET provider_ref = 'SM-' || id WHERE id = ANY($1)`, [[recent, today]])
    expect((await runRetention(db(), { store, log }))[0].archived).toBe(2)
    const before = { ...await counts(), view: await viewCounts(db()) }
    expect(before).toMatchObject({ notifications: 2, history: 2 })
    const indexes = { notifications: await indexCount('notifications'), history: await indexCount('notification_history') }

    const r = await partitionByDay(db(), { timezone: TZ, daysAhead: 7 })
    expect(r.applied).toBe(true)
    const day = (await db().query(`SELECT to_char($1::timestamptz AT TIME ZONE $2, 'YYYYMMDD') AS d`, [r.bound, TZ]))[0].d
    const [{ bound }] = await db().query(`SELECT (((now() AT TIME ZONE $1)::date + 2)::timestamp AT TIME ZONE $1) AS bound`, [TZ])
    expect(r.bound).toEqual(bound) // local midnight two days ahead
    expect(r.partitions).toContain(`notifications_before_${day}`)
    expect(r.partitions).toContain(`notification_history_before_${day}`)
    const kinds = await db().query(`SELECT relname, relkind FROM pg_class WHERE relname IN ('notifications', 'notification_history') ORDER BY 1`)
    expect(kinds.map((k) => k.relkind)).toEqual(['p', 'p'])
    expect({ ...await counts(), view: await viewCounts(db()) }).toEqual(before)
    expect(await whereIs('notification_history', old)).toBe(`notification_history_before_${day}`)
    // ATTACH adopted the old tables' indexes (the keys moved onto ones prepared beside them): none was built at the swap.
    expect(await indexCount(`notifications_before_${day}`)).toBe(indexes.notifications)
    expect(await indexCount(`notification_history_before_${day}`)).toBe(indexes.history)
    // Lookups by id stay on an index in every partition.
    const plan = await db().transaction(async (tx) => {
      await tx.exec('SET LOCAL enable_seqscan = off')
      return (await tx.query(`EXPLAIN SELECT * FROM notifications_all_time_view WHERE id = '${old}'`)).map((p) => p['QUERY PLAN']).join('\n')
    })
    expect(plan).not.toContain('Seq Scan')

    // The API reads from both sides of the swap.
    expect((await (await callApi(w, 'GET', `/v2/notifications/${today}`)).json()).status).toBe('sending')
    // A text through the API, the send engine (SMS sandbox) and its receipts by provider reference.
    const sms = await smsProviders(db(), publicUrl, 2000)
    try {
      const sent = await (await callApi(w, 'POST', '/v2/notifications/sms', { phone_number: '+12125550100', template_id: w.template.id,
        personalisation: { name: 'Ada', ref: 'X' } })).json()
      expect(await sendEngine({ providers: sms.providers, sealer, region: 'US', concurrency: 2, recoverySeconds: 300, log, workerId: 'test' })
        .step(db(), go())).toEqual({ sending: 1 })
      await until(() => sms.twilio.stats.callbacksSent === 2)
      expect(await receiptsEngine(log).step(db(), go())).toEqual({ applied: 2 })
      const [n] = await db().query(`SELECT status, provider_ref FROM notifications WHERE id = $1`, [sent.id])
      expect(n.status).toBe('delivered')
      expect(n.provider_ref).toBeTruthy()
    } finally {
      await sms.close()
    }
    // Rows after the bound land in their day's partition (and one beyond them in the DEFAULT one); a receipt finds one by its reference.
    const after = new Date(r.bound.getTime() + 3600_000)
    const beyond = new Date(r.bound.getTime() + 40 * DAY)
    const [next, far] = await seedNotifications(db(), w.service, w.template.id, [{ at: after, status: 'sending' }, { at: beyond }])
    expect(await whereIs('notifications', next)).toBe(`notifications_p${day}`)
    expect(await whereIs('notifications', far)).toBe('notifications_default')
    await db().query(`UPDATE notifications SET provider_ref = 'SM-next' WHERE id = $1`, [next])
    await db().query(`INSERT INTO sms_receipts (provider, provider_ref, status) VALUES ('twilio', 'SM-next', 'delivered')`)
    expect(await receiptsEngine(log).step(db(), go())).toEqual({ applied: 1 })
    // The nightly step makes the days up to the DEFAULT one's row, moving it into its own day.
    const made = await ensureDayPartitions(db(), { timezone: TZ, daysAhead: 45 })
    expect(made.created).toContain(`notifications_p${localDay(beyond).replaceAll('-', '')}`)
    expect(await whereIs('notifications', far)).toBe(`notifications_p${localDay(beyond).replaceAll('-', '')}`)
    expect((await db().query(`SELECT count(*)::int AS n FROM notifications_default`))[0].n).toBe(0)

    // Retention moves rows across partitions of both tables, in one statement a batch, as before.
    const moved = await runRetention(db(), { store, log, asOf: new Date(beyond.getTime() + 10 * DAY) })
    expect(moved[0].archived).toBe(5)
    expect(await counts()).toEqual({ notifications: 0, history: 7 })
    expect(await whereIs('notification_history', next)).toBe(`notification_history_p${day}`)
    expect(await whereIs('notification_history', far)).toBe(`notification_history_p${localDay(beyond).replaceAll('-', '')}`)
    // Reports and facts read the view over both.
    const csv = []
    for await (const chunk of reportCsv(db(), sealer, { serviceId: w.service.id, from: localDay(at(21)), to: localDay(beyond) })) csv.push(chunk)
    expect(parse(csv.join(''), { columns: true })).toHaveLength(7)
    const facts = await computeFacts(db(), { from: localDay(at(21)), to: localDay(beyond) })
    expect(facts.billingRows).toBeGreaterThan(0)
    const [{ sum }] = await db().query(`SELECT sum(notifications_sent)::int AS sum FROM ft_billing WHERE service_id = $1`, [w.service.id])
    expect(sum).toBe(7) // all seven were handed to a provider: billable
  })

  it('runs once: a second run does nothing; the nightly run keeps the days ahead', async () => {
    // Nothing to swap, and no day missing (the test before made them 45 days ahead).
    expect(await partitionByDay(db(), { timezone: TZ })).toMatchObject({ applied: false, partitions: [] })
    const farDay = (await db().query(`SELECT to_char((now() AT TIME ZONE $1)::date + 50, 'YYYYMMDD') AS d`, [TZ]))[0].d
    const nightly = nightlyEngine({ store, at: '00:00', timezone: TZ, log, workerId: 'n', checkEveryMs: 0, partitionDaysAhead: 50 })
    expect(await nightly.step(db(), go())).toEqual({ nights: 1 })
    const [run] = await db().query(`SELECT summary FROM nightly_runs`)
    expect(run.summary.partitions).toBe(10) // days 46 to 50 ahead of each table (the test before made them up to 45)
    for (const t of ['notifications', 'notification_history']) {
      expect(await db().query(`SELECT 1 FROM pg_class WHERE relname = $1`, [`${t}_p${farDay}`])).toHaveLength(1)
    }
  })
})
