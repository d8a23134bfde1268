/**
 * One admission rule for every way a text is created (issue 15): the daily limit and the rate limit hold for the API, a bulk job at
 * upload and again when it starts, and the CLI's upload (createJob, which `herald jobs create` calls); the rate limit comes first.
 */
import { describe, expect, it } from 'vitest'
import { Directory } from '../../src/messaging/api/directory.ts'
import { createJob, jobsEngine } from '../../src/messaging/jobs/jobs.ts'
import { createLogger } from '../../src/log.ts'
import { findService } from '../../src/messaging/services.ts'
import { LocalStore } from '../../src/storage/local.ts'
import { callApi, jobStore, messagingWorld, sealer } from '../helpers/messaging.ts'

const w = messagingWorld()
const store = new LocalStore(jobStore)
const engine = () => jobsEngine({ sealer, region: 'US', store }, createLogger('silent'))
const go = () => new AbortController().signal
const csv = (n: number) => ['phone number,name,ref', ...Array.from({ length: n }, (_, i) => `+1 212 555 ${String(1000 + i).padStart(4, '0')},P${i},R${i}`)].join('\n')
const text = (personalisation: object = { name: 'A', ref: 'B' }) =>
  callApi(w, 'POST', '/v2/notifications/sms', { phone_number: '+1 212 555 0100', template_id: w.template.id, personalisation })
const upload = (rows: number, extra: object = {}) => callApi(w, 'POST', '/v2/jobs', { template_id: w.template.id, csv: csv(rows), ...extra })
const limits = (rate: number, daily: number) => w.t.db.query('UPDATE services SET rate_limit = $2, message_limit = $3 WHERE id = $1', [w.service.id, rate, daily])
const body = async (res: Response) => ({ status: res.status, body: await res.json() })
const DAILY = (n: number) => ({ status: 429, body: { status_code: 429, errors: [{ error: 'TooManyRequestsError', message: `Exceeded send limits (sms: ${n}) for today` }] } })
const RATE = (n: number) => ({ status: 429, body: { status_code: 429, errors: [{ error: 'RateLimitError', message: `Exceeded rate limit for key type LIVE of ${n} requests per 60 seconds` }] } })
const count = async (sql: string, ...p: unknown[]) => (await w.t.db.query(sql, p))[0].n as number

describe('the daily limit, whichever way the texts come', () => {
  it('a service that sent its 5 texts by API cannot upload a 20-row job: refused at upload with Notify\'s error, nothing stored', async () => {
    await limits(100, 5)
    for (let i = 0; i < 5; i++) expect((await text()).status).toBe(201)
    expect(await body(await text())).toEqual(DAILY(5))
    expect(await body(await upload(20))).toEqual(DAILY(5))
    expect(await count('SELECT count(*)::int AS n FROM jobs')).toBe(0)
    expect(await count('SELECT count(*)::int AS n FROM notifications')).toBe(5)
  })

  it('a job that fits today\'s room at upload but not when it starts does not start: status "sending limits exceeded", as Notify\'s process_job', async () => {
    await limits(100, 25)
    const up = await body(await upload(20, { scheduled_for: new Date(Date.now() + 3600_000).toISOString() }))
    expect(up.status).toBe(201)
    for (let i = 0; i < 6; i++) expect((await text()).status).toBe(201) // 6 + 20 > 25
    await w.t.db.query(`UPDATE jobs SET retry_at = now() - interval '1 second' WHERE id = $1`, [up.body.id])
    expect(await engine().step(w.t.db, go())).toEqual({ limited: 1 })
    const [job] = await w.t.db.query('SELECT * FROM jobs WHERE id = $1', [up.body.id])
    expect(job).toMatchObject({ status: 'sending limits exceeded', error: 'Exceeded send limits (sms: 25) for today', claimed_by: null, rows_done: 0 })
    expect(await count('SELECT count(*)::int AS n FROM notifications WHERE job_id = $1', up.body.id)).toBe(0)
    expect(await engine().step(w.t.db, go())).toEqual({}) // not due again
    expect((await body(await callApi(w, 'GET', `/v2/jobs/${up.body.id}`))).body.status).toBe('sending limits exceeded')
  })

  it('a job that starts counts all its rows at once: API texts sent while it runs cannot take its room; rows it did not make are given back', async () => {
    await limits(100, 25)
    const up = await body(await upload(20))
    expect(await engine().step(w.t.db, go())).toEqual({ rows: 20 })
    for (let i = 0; i < 5; i++) expect((await text()).status).toBe(201)
    expect(await body(await text())).toEqual(DAILY(25))
    const texts = async () => (await w.t.db.query('SELECT texts FROM daily_counts WHERE service_id = $1', [w.service.id]))[0].texts
    expect(await texts()).toBe(25)
    // A job cancelled after it started (10 rows counted, 3 made) gives back the 7 it will not make.
    await limits(100, 40)
    const second = await body(await upload(10))
    const [{ day }] = await w.t.db.query(`UPDATE daily_counts SET texts = texts + 10 WHERE service_id = $1 RETURNING day::text AS day`, [w.service.id])
    await w.t.db.query(`UPDATE jobs SET status = 'in progress', counted_on = $2, rows_done = 3 WHERE id = $1`, [second.body.id, day])
    expect((await callApi(w, 'POST', `/v2/jobs/${second.body.id}/cancel`)).status).toBe(200)
    expect(await texts()).toBe(28)
  })

  it('test keys do not count, at upload or at start', async () => {
    await limits(100, 1)
    const res = await callApi(w, 'POST', '/v2/jobs', { template_id: w.template.id, csv: csv(5) }, w.keys.test)
    expect(res.status).toBe(201)
    expect(await engine().step(w.t.db, go())).toEqual({ rows: 5 })
  })

  it('the CLI\'s upload (createJob, as `herald jobs create` calls it) is held to the same daily limit', async () => {
    await limits(100, 3)
    const service = await findService(w.t.db, w.service.id)
    const dir = new Directory(w.t.db, 0)
    const template = (await dir.template(service.id, w.template.id))!
    const r = await createJob({ db: w.t.db, dir, sealer, region: 'US', store }, {
      service, template, keyType: 'normal', apiKeyId: null, csv: Buffer.from(csv(4)), name: 'x.csv', createdBy: 'tester' })
    expect(r).toEqual({ ok: false, limit: 'daily', errors: ['Exceeded send limits (sms: 3) for today'] })
  })
})

describe('the rate limit', () => {
  it('holds for job uploads: each is a request of its key type', async () => {
    await limits(2, 1000)
    expect((await upload(1)).status).toBe(201)
    expect((await text()).status).toBe(201)
    expect(await body(await upload(1))).toEqual(RATE(2))
    expect(await count('SELECT count(*)::int AS n FROM jobs')).toBe(1)
  })

  it('comes first, before the template and the recipient are judged, as Notify checks it', async () => {
    await limits(1, 1000)
    expect((await text()).status).toBe(201)
    // Missing personalisation: Notify answers the limit, not the 400.
    expect(await body(await text({ name: 'A' }))).toEqual(RATE(1))
    // A refused request spends its token too: a bucket of 1 refills at 1 a minute.
    await w.t.db.query(`UPDATE rate_buckets SET tokens = 1 WHERE service_id = $1`, [w.service.id])
    expect((await body(await text({ name: 'A' }))).body.errors[0].message).toBe('Missing personalisation: ref')
    expect(await body(await text())).toEqual(RATE(1))
  })

  it('the daily limit too is answered before a bad request\'s own error', async () => {
    await limits(100, 1)
    expect((await text()).status).toBe(201)
    expect(await body(await text({ name: 'A' }))).toEqual(DAILY(1))
  })
})
