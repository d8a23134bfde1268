/**
 * Retention: local-midnight boundaries across clock changes, per-service days, test keys deleted, history without numbers, job files
 * removed, a stop at a batch boundary. The nightly run as a schedule on the work queue: once a night, stopped and resumed, taken over,
 * retried, next due at its local time.
 */
import { describe, expect, it } from 'vitest'
import { existsSync } from 'node:fs'
import { Writable } from 'node:stream'
import { claim } from '../../src/engine/queue.ts'
import { createLogger } from '../../src/log.ts'
import { Directory } from '../../src/messaging/api/directory.ts'
import { createJob, jobsEngine } from '../../src/messaging/jobs/jobs.ts'
import { nextNight, nightlyEngine } from '../../src/messaging/retention/nightly.ts'
import { nightlyQueue } from '../../src/messaging/retention/queue.ts'
import { runRetention, setRetention } from '../../src/messaging/retention/retention.ts'
import { createService, createTemplate } from '../../src/messaging/services.ts'
import { LocalStore } from '../../src/storage/local.ts'
import { jobStore, messagingWorld, sealer } from '../helpers/messaging.ts'
import { seedNotifications, viewCounts } from '../helpers/notifications.ts'

const w = messagingWorld()
const log = createLogger('silent')
const store = new LocalStore(jobStore)
const retain = (asOf: string, batch?: number) => runRetention(w.t.db, { store, log, asOf: new Date(asOf), batch })
const where = async (ids: string[]) => {
  const live = new Set((await w.t.db.query(`SELECT id FROM notifications WHERE id = ANY($1::uuid[])`, [ids])).map((r) => r.id))
  const old = new Set((await w.t.db.query(`SELECT id FROM notification_history WHERE id = ANY($1::uuid[])`, [ids])).map((r) => r.id))
  return ids.map((id) => (live.has(id) ? 'kept' : old.has(id) ? 'history' : 'gone'))
}

describe('retention', () => {
  it('ends at local midnight when the clocks went back in between (New York, 1 November 2026)', async () => {
    // 10:00 EST on 5 November; 7 days → before midnight EDT starting 29 October = 04:00 UTC (not 05:00, today's offset).
    const ids = await seedNotifications(w.t.db, w.service, w.template.id, [
      { at: '2026-10-29T03:59:59Z' }, { at: '2026-10-29T04:00:00Z' }, { at: '2026-10-29T04:30:00Z' }, { at: '2026-11-04T12:00:00Z' }])
    const [r] = await retain('2026-11-05T15:00:00Z')
    expect(r.cutoff.toISOString()).toBe('2026-10-29T04:00:00.000Z')
    expect(await where(ids)).toEqual(['history', 'kept', 'kept', 'kept'])
  })

  it('ends at local midnight when the clocks went forward in between (New York, 8 March 2026)', async () => {
    // 10:00 EDT on 12 March; 7 days → before midnight EST starting 5 March = 05:00 UTC (not 04:00).
    const ids = await seedNotifications(w.t.db, w.service, w.template.id, [{ at: '2026-03-05T04:30:00Z' }, { at: '2026-03-05T05:00:00Z' }])
    const [r] = await retain('2026-03-12T14:00:00Z')
    expect(r.cutoff.toISOString()).toBe('2026-03-05T05:00:00.000Z')
    expect(await where(ids)).toEqual(['history', 'kept'])
  })

  it("keeps each service's notifications for its own days, in its own time zone", async () => {
    const london = await createService(w.t.db, { name: 'London clinic', timezone: 'Europe/London' })
    const tl = await createTemplate(w.t.db, london.id, 'Hi', 'Hello', 'tester')
    await setRetention(w.t.db, w.service.id, 3)
    const at = '2026-11-19T12:00:00Z'
    const ny = await seedNotifications(w.t.db, w.service, w.template.id, [{ at }, { at: '2026-11-22T12:00:00Z' }])
    const uk = await seedNotifications(w.t.db, london, tl.id, [{ at }, { at: '2026-11-15T23:30:00Z' }, { at: '2026-11-16T00:00:00Z' }])
    const results = await retain('2026-11-23T12:00:00Z')
    // Each service and type: texts' retention set to 3 days for one service, emails' left at 7.
    expect(results.map((r) => [r.name, r.type, r.days, r.cutoff.toISOString()])).toEqual([
      ['London clinic', 'sms', 7, '2026-11-16T00:00:00.000Z'], ['London clinic', 'email', 7, '2026-11-16T00:00:00.000Z'],
      ['Test results', 'sms', 3, '2026-11-20T05:00:00.000Z'], ['Test results', 'email', 7, '2026-11-16T05:00:00.000Z']])
    expect(await where(ny)).toEqual(['history', 'kept'])
    expect(await where(uk)).toEqual(['kept', 'history', 'kept'])
    await expect(setRetention(w.t.db, w.service.id, 2)).rejects.toThrow('3 to 90')
  })

  it('deletes test-key notifications, moves the rest in batches without recipient or personalisation, and counts stay exact', async () => {
    const old = '2026-11-01T12:00:00Z'
    const seeds = Array.from({ length: 250 }, (_, i) => ({ at: old, keyType: i % 5 === 0 ? 'test' as const : 'normal' as const, status: i % 7 ? 'delivered' : 'permanent-failure' }))
    const ids = await seedNotifications(w.t.db, w.service, w.template.id, seeds)
    const [{ n: live }] = await w.t.db.query(`SELECT count(*)::int AS n FROM notifications_all_time_view WHERE key_type <> 'test'`)
    const before = await w.t.db.query(`SELECT status, count(*)::int AS n FROM notifications_all_time_view WHERE key_type <> 'test' GROUP BY 1 ORDER BY 1`)
    const [r] = await retain('2026-11-23T12:00:00Z', 30)
    expect({ archived: r.archived, deleted: r.deleted }).toEqual({ archived: 200, deleted: 50 })
    expect(await where(ids)).toEqual(seeds.map((s) => (s.keyType === 'test' ? 'gone' : 'history')))
    expect(await w.t.db.query(`SELECT status, count(*)::int AS n FROM notifications_all_time_view GROUP BY 1 ORDER BY 1`)).toEqual(before)
    expect((await viewCounts(w.t.db)).notifications).toBe(live)
    const cols = (await w.t.db.query(`SELECT column_name FROM information_schema.columns WHERE table_name = 'notification_history'`)).map((c) => c.column_name)
    expect(cols.filter((c) => /recipient|personalisation/.test(c))).toEqual([])
    const again = await retain('2026-11-23T12:00:00Z')
    expect(again[0]).toMatchObject({ archived: 0, deleted: 0 })
  })

  it("removes a bulk job's file from the object store once the job is past retention", async () => {
    const template = (await new Directory(w.t.db, 0).template(w.service.id, w.template.id))!
    const csv = 'phone number,name,ref\n+1 212 555 0101,Ann,R1\n+1 212 555 0102,Bo,R2'
    const job = await createJob({ db: w.t.db, dir: new Directory(w.t.db, 0), sealer, region: 'US', store }, {
      service: w.service, template, keyType: 'normal', apiKeyId: null, csv: Buffer.from(csv), name: 'people.csv', createdBy: 'test' })
    if (!job.ok) throw new Error(job.errors.join())
    await jobsEngine({ sealer, region: 'US', store }, log).step(w.t.db, new AbortController().signal)
    const [{ file_uri: file }] = await w.t.db.query(`SELECT file_uri FROM jobs WHERE id = $1`, [job.id])
    expect(existsSync(file)).toBe(true)
    const inTenDays = new Date(Date.now() + 10 * 86400_000).toISOString()
    expect((await retain(new Date().toISOString()))[0].files).toBe(0)
    const [r] = await retain(inTenDays)
    expect({ archived: r.archived, files: r.files }).toEqual({ archived: 2, files: 1 })
    expect(existsSync(file)).toBe(false)
    const [after] = await w.t.db.query(`SELECT file_uri, archived_at FROM jobs WHERE id = $1`, [job.id])
    expect(after.file_uri).toBeNull()
    expect(after.archived_at).not.toBeNull()
  })

  it('stops at the next batch when told: what moved stays moved, the next run moves the rest', async () => {
    const ids = await seedNotifications(w.t.db, w.service, w.template.id, Array.from({ length: 100 }, () => ({ at: '2026-11-01T12:00:00Z' })))
    const stop = new AbortController()
    const [r] = await runRetention(w.t.db, { store, log, asOf: new Date('2026-11-23T12:00:00Z'), batch: 30, signal: stop.signal, onBatch: async () => stop.abort() })
    expect(r).toMatchObject({ archived: 30, files: 0 })
    expect((await where(ids)).filter((x) => x === 'history')).toHaveLength(30)
    await retain('2026-11-23T12:00:00Z', 30)
    expect(new Set(await where(ids))).toEqual(new Set(['history']))
  })
})

describe('nightly run', () => {
  const TZ = 'America/New_York'
  const nightly = (workerId: string, at = '00:00', logger = log) => nightlyEngine({ store, at, timezone: TZ, log: logger, workerId, checkEveryMs: 0 })
  const go = () => new AbortController().signal
  const schedule = async () => (await w.t.db.query(`SELECT * FROM schedules WHERE name = 'nightly'`))[0]
  const today = async () => (await w.t.db.query(`SELECT (now() AT TIME ZONE $1)::date::text AS d`, [TZ]))[0].d

  it('runs once a night, however many processes look, facts first; then is due at the next night\'s time', async () => {
    await seedNotifications(w.t.db, w.service, w.template.id, [{ at: new Date(Date.now() - 30 * 86400_000) }, { at: new Date(Date.now() - 86400_000) }])
    const engines = [nightly('A'), nightly('B')]
    const steps = await Promise.all(engines.map((e) => e.step(w.t.db, go())))
    expect(steps.map((s) => s.nights ?? 0).sort()).toEqual([0, 1])
    expect((await Promise.all(engines.map((e) => e.step(w.t.db, go())))).every((s) => !s.nights)).toBe(true)
    const [run] = await w.t.db.query(`SELECT night::text, finished_at, summary FROM nightly_runs`)
    expect(run.night).toBe(await today())
    expect(run.finished_at).not.toBeNull()
    expect(run.summary).toMatchObject({ archived: 1, facts: { days: 3 } })
    const [{ n }] = await w.t.db.query(`SELECT sum(notification_count)::int AS n FROM ft_notification_status`)
    expect(n).toBe(1)
    const row = await schedule()
    expect(row).toMatchObject({ claimed_by: null, claimed_until: null, attempts: 0, failed_at: null, last_run_at: expect.any(Date) })
    expect(row.retry_at).toEqual(await nextNight(w.t.db, TZ, '00:00'))
    expect(row.retry_at.getTime()).toBeGreaterThan(Date.now())
  })

  it('a process started after the night\'s time does not run it again when tonight has run', async () => {
    await w.t.db.query(`INSERT INTO nightly_runs (task, night, finished_at) VALUES ('messaging', $1, now())`, [await today()])
    expect(await nightly('A').step(w.t.db, go())).toEqual({})
    expect((await schedule()).retry_at).toEqual(await nextNight(w.t.db, TZ, '00:00'))
  })

  it('a stopped run lets go of the night at the next boundary; another process runs it', async () => {
    await seedNotifications(w.t.db, w.service, w.template.id, [{ at: new Date(Date.now() - 86400_000) }])
    // The stop comes as the run starts: facts stop before their first service-day, retention does not start.
    const stop = new AbortController()
    const stopping = createLogger('info', new Writable({ write(chunk, _e, done) {
      if (String(chunk).includes('nightly run: facts')) stop.abort()
      done()
    } }))
    expect(await nightly('A', '00:00', stopping).step(w.t.db, stop.signal)).toEqual({ stopped: 1 })
    const row = await schedule()
    expect(row).toMatchObject({ claimed_by: null, attempts: 0 })
    expect(row.retry_at.getTime()).toBeLessThanOrEqual(Date.now())
    expect(await w.t.db.query(`SELECT finished_at FROM nightly_runs`)).toEqual([{ finished_at: null }])
    expect(await w.t.db.query(`SELECT 1 FROM ft_notification_status`)).toEqual([])
    expect(await nightly('B').step(w.t.db, go())).toEqual({ nights: 1 })
    expect((await w.t.db.query(`SELECT summary FROM nightly_runs WHERE finished_at IS NOT NULL`))[0].summary).toMatchObject({ facts: { days: 3 } })
  })

  it('a run whose process died is taken over when its lease runs out', async () => {
    await w.t.db.query(`INSERT INTO schedules (name, retry_at) VALUES ('nightly', now())`)
    expect(await claim(w.t.db, nightlyQueue, 'dead', 1)).toHaveLength(1)
    expect(await nightly('B').step(w.t.db, go())).toEqual({})
    await w.t.db.query(`UPDATE schedules SET claimed_until = now() - interval '1 second'`)
    expect(await nightly('B').step(w.t.db, go())).toEqual({ nights: 1 })
    expect(await schedule()).toMatchObject({ claimed_by: null, attempts: 0, last_error: null })
  })

  it('a run that fails is tried again after the spec\'s backoff', async () => {
    await w.t.db.exec(`ALTER TABLE ft_billing RENAME TO ft_billing_away`)
    try {
      expect(await nightly('A').step(w.t.db, go())).toEqual({ retrying: 1 })
    } finally {
      await w.t.db.exec(`ALTER TABLE ft_billing_away RENAME TO ft_billing`)
    }
    const row = await schedule()
    expect(row).toMatchObject({ attempts: 1, claimed_by: null, failed_at: null, last_error: expect.stringContaining('42P01') })
    expect(row.retry_at.getTime()).toBeGreaterThan(Date.now() + 500_000) // 600 s ±10%
    expect(await nightly('A').step(w.t.db, go())).toEqual({})
  })

  it('is next due at HERALD_NIGHTLY_AT in its time zone, across clock changes', async () => {
    const next = async (tz: string, asOf: string) => (await nextNight(w.t.db, tz, '03:00', new Date(asOf))).toISOString()
    expect(await next(TZ, '2026-03-07T12:00:00Z')).toBe('2026-03-08T07:00:00.000Z') // 03:00 EDT, the night the clocks go forward
    expect(await next(TZ, '2026-03-08T06:59:00Z')).toBe('2026-03-08T07:00:00.000Z')
    expect(await next(TZ, '2026-03-08T07:00:00Z')).toBe('2026-03-09T07:00:00.000Z')
    expect(await next(TZ, '2026-10-31T12:00:00Z')).toBe('2026-11-01T08:00:00.000Z') // 03:00 EST, the night they go back
    expect(await next('Europe/London', '2026-03-28T12:00:00Z')).toBe('2026-03-29T02:00:00.000Z') // 03:00 BST
  })
})
