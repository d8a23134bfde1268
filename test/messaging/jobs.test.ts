/**
 * Bulk jobs: a CSV uploaded through the API, checked row by row, kept in the object store, turned into notifications in bulk; progress,
 * scheduling, cancelling; on the work queue: a stop ends at a batch boundary, a restart or a takeover resumes where the last batch ended.
 */
import { describe, expect, it } from 'vitest'
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { Readable } from 'node:stream'
import { createLogger } from '../../src/log.ts'
import { jobsEngine } from '../../src/messaging/jobs/jobs.ts'
import type { Sealer } from '../../src/privacy/seal.ts'
import { LocalStore } from '../../src/storage/local.ts'
import type { ObjectStore } from '../../src/storage/types.ts'
import { callApi, jobStore, messagingWorld, sealer } from '../helpers/messaging.ts'

const w = messagingWorld()
const local = new LocalStore(jobStore)
const engine = (o: { workerId?: string; batch?: number; store?: ObjectStore; sealer?: Sealer } = {}) =>
  jobsEngine({ sealer, region: 'US', store: local, ...o }, createLogger('silent'))
const go = () => new AbortController().signal
const jobRow = async (id: string) => (await w.t.db.query('SELECT * FROM jobs WHERE id = $1', [id]))[0]
const madeRows = async (id: string) => (await w.t.db.query('SELECT job_row FROM notifications WHERE job_id = $1 ORDER BY job_row', [id])).map((r) => r.job_row)

/**
 * A job's file that arrives slowly: its first 4 recipients, then (once a batch was made) `between`, then the rest. (With 3, the
 * parser holds the third back for what follows it.)
 */
const slowStore = (id: string, file: string, between: () => Promise<unknown>): ObjectStore => {
  const lines = file.split('\n')
  // Sealed as stored, in 1-byte frames so that what has come is readable at once.
  return Object.assign(Object.create(local) as ObjectStore, { open: async () => ({ version: '1', body: Readable.from((async function* () {
    yield lines.slice(0, 5).join('\n') + '\n'
    while ((await jobRow(id)).rows_done === 0) await new Promise((r) => setTimeout(r, 10))
    await between()
    yield lines.slice(5).join('\n')
  })()).pipe(sealer.files.sealer(id, 1)) }) })
}

async function api(method: string, path: string, body?: object) {
  const res = await callApi(w, method, path, body)
  return { status: res.status, body: await res.json() }
}

const csv = (n: number, phone = (i: number) => `+1 212 555 ${String(1000 + i).padStart(4, '0')}`) =>
  ['Phone Number,name,ref,notes', ...Array.from({ length: n }, (_, i) => `${phone(i)},Person ${i},R${i},ignored`)].join('\n')

describe('bulk jobs', () => {
  it('a file with bad rows is refused, each problem named by its spreadsheet row; nothing is stored', async () => {
    const body = ['phone number,name,ref', '+1 212 555 0100,Ada,1', '12,Bo,2', '+1 212 555 0102,,3', '212-555-CALL,Cy,4'].join('\n')
    const r = await api('POST', '/v2/jobs', { template_id: w.template.id, csv: body, filename: 'results.csv' })
    expect(r.status).toBe(400)
    expect(r.body.errors.map((e: { message: string }) => e.message)).toEqual([
      'row 3: phone_number Not enough digits', 'row 4: Missing personalisation: name', 'row 5: phone_number Must not contain letters or symbols'])
    expect((await api('POST', '/v2/jobs', { template_id: w.template.id, csv: 'mobile,name\n1,2' })).body.errors[0].message).toBe('Missing column: phone number')
    expect((await api('POST', '/v2/jobs', { template_id: w.template.id, csv: 'phone number,other\n+1 212 555 0100,2' })).body.errors[0].message).toBe('Missing columns: name, ref')
    expect(await w.t.db.query('SELECT * FROM jobs')).toHaveLength(0)
  })

  it('a good file: stored in the object store (not the database), its rows made notifications in bulk, progress shown', async () => {
    const up = await api('POST', '/v2/jobs', { template_id: w.template.id, csv: csv(4500), filename: 'results.csv' })
    expect(up.status).toBe(201)
    expect(up.body).toMatchObject({ status: 'pending', rows: 4500, notifications_created: 0, original_file_name: 'results.csv' })
    const [job] = await w.t.db.query('SELECT file_uri FROM jobs WHERE id = $1', [up.body.id])
    expect(existsSync(job.file_uri)).toBe(true)
    expect(readFileSync(job.file_uri, 'latin1')).not.toContain('Person 4499') // sealed at rest (job-files.test.ts)
    expect(await engine().step(w.t.db, new AbortController().signal)).toEqual({ rows: 4500 })
    const done = await api('GET', `/v2/jobs/${up.body.id}`)
    expect(done.body).toMatchObject({ status: 'finished', notifications_created: 4500, statistics: [{ status: 'created', count: 4500 }] })
    const rows = await w.t.db.query('SELECT job_row, recipient_ct, personalisation_ct FROM notifications WHERE job_id = $1 ORDER BY job_row', [up.body.id])
    expect(rows.map((r) => r.job_row)).toEqual(Array.from({ length: 4500 }, (_, i) => i + 2))
    expect(sealer.open(Buffer.from(rows[0].recipient_ct))).toBe('+1 212 555 1000')
    expect(JSON.parse(sealer.open(Buffer.from(rows[4499].personalisation_ct)))).toEqual({ name: 'Person 4499', ref: 'R4499' })
    // Job rows are left out of the API's list unless asked for, as in Notify.
    expect((await api('GET', '/v2/notifications')).body.notifications).toHaveLength(0)
    expect((await api('GET', '/v2/notifications?include_jobs=true')).body.notifications).toHaveLength(250)
  })

  it('a scheduled job waits for its time; a job can be cancelled, with its texts not yet sent', async () => {
    const later = await api('POST', '/v2/jobs', { template_id: w.template.id, csv: csv(3), scheduled_for: new Date(Date.now() + 3600_000).toISOString() })
    expect(later.body.status).toBe('scheduled')
    expect(await engine().step(w.t.db, new AbortController().signal)).toEqual({})
    const cancelled = await api('POST', `/v2/jobs/${later.body.id}/cancel`)
    expect(cancelled.body.status).toBe('cancelled')
    expect((await api('POST', `/v2/jobs/${later.body.id}/cancel`)).body.errors[0].message).toBe('Job is cancelled: it cannot be cancelled')

    const now = await api('POST', '/v2/jobs', { template_id: w.template.id, csv: csv(5) })
    await engine().step(w.t.db, new AbortController().signal)
    expect((await api('POST', `/v2/jobs/${now.body.id}/cancel`)).body.errors[0].message).toBe('Job is finished: it cannot be cancelled')
    await w.t.db.query(`UPDATE jobs SET status = 'in progress' WHERE id = $1`, [now.body.id])
    expect((await api('POST', `/v2/jobs/${now.body.id}/cancel`)).body.statistics).toEqual([{ status: 'cancelled', count: 5 }])
    expect(readdirSync(jobStore).filter((f) => f.endsWith('.csv.sealed')).length).toBeGreaterThanOrEqual(2)
  })

  it('a scheduled job is a queue row with a time: due (retry_at) at its scheduled time', async () => {
    const at = new Date(Date.now() + 3600_000)
    const later = await api('POST', '/v2/jobs', { template_id: w.template.id, csv: csv(2), scheduled_for: at.toISOString() })
    const job = await jobRow(later.body.id)
    expect([job.status, new Date(job.retry_at).getTime()]).toEqual(['scheduled', at.getTime()])
    await w.t.db.query(`UPDATE jobs SET retry_at = now() - interval '1 second' WHERE id = $1`, [later.body.id])
    expect(await engine().step(w.t.db, go())).toEqual({ rows: 2 })
    expect(await jobRow(later.body.id)).toMatchObject({ status: 'finished', rows_done: 2, claimed_by: null, started_at: expect.any(Date) })
  })

  it('a job with a bad row in the middle, stopped after its first batch, resumes after it: every row exactly once', async () => {
    const up = await api('POST', '/v2/jobs', { template_id: w.template.id, csv: csv(7) })
    // The file changed after upload: its third recipient (spreadsheet row 4) is no longer a number.
    const { file_uri: file } = await jobRow(up.body.id)
    const changed = csv(7, (i) => (i === 2 ? '12' : `+1 212 555 ${String(1000 + i).padStart(4, '0')}`))
    writeFileSync(file, Buffer.concat(await sealer.files.seal(Buffer.from(changed), up.body.id).body.toArray()))
    // The stop comes while the first batch is being made (its third text sealed): it ends at that batch's end.
    const stop = new AbortController()
    let hashed = 0
    const stopping = { hash: (s: string) => ((++hashed === 3 && stop.abort()), sealer.hash(s)), seal: (s: string) => sealer.seal(s), files: sealer.files } as unknown as Sealer
    expect(await engine({ batch: 3, sealer: stopping }).step(w.t.db, stop.signal)).toEqual({ rows: 3, stopped: 1 })
    expect(await jobRow(up.body.id)).toMatchObject({ status: 'in progress', rows_done: 3, rows_read: 4, claimed_by: null, attempts: 0 })
    expect(await madeRows(up.body.id)).toEqual([2, 3, 5])
    // Another worker (a restart) resumes after the 4 data rows read, not the 3 notifications made.
    expect(await engine({ batch: 3 }).step(w.t.db, go())).toEqual({ rows: 3 })
    expect(await madeRows(up.body.id)).toEqual([2, 3, 5, 6, 7, 8])
    expect(await jobRow(up.body.id)).toMatchObject({ status: 'finished', rows_done: 6, rows_read: 7, claimed_by: null })
    expect(await engine().step(w.t.db, go())).toEqual({})
  })

  it('a worker whose job was taken over (its lease ran out) writes no batch after; the new holder makes the rest, each row once', async () => {
    const up = await api('POST', '/v2/jobs', { template_id: w.template.id, csv: csv(9) })
    // The file arrives slowly: after its first batch was made, another worker takes the job over.
    const slow = slowStore(up.body.id, csv(9), () => w.t.db.query(`UPDATE jobs SET claimed_by = 'B', claimed_until = now() + interval '5 minutes' WHERE id = $1`, [up.body.id]))
    expect(await engine({ workerId: 'A', batch: 3, store: slow }).step(w.t.db, go())).toEqual({ rows: 3, lost: 1 })
    expect(await madeRows(up.body.id)).toEqual([2, 3, 4])
    expect(await jobRow(up.body.id)).toMatchObject({ claimed_by: 'B', rows_read: 3 })
    // B dies in turn; its lease runs out and C takes the job (an attempt spent on the lost lease).
    await w.t.db.query(`UPDATE jobs SET claimed_until = now() - interval '1 second' WHERE id = $1`, [up.body.id])
    expect(await engine({ workerId: 'C', batch: 3 }).step(w.t.db, go())).toEqual({ rows: 6 })
    expect(await madeRows(up.body.id)).toEqual([2, 3, 4, 5, 6, 7, 8, 9, 10])
    expect(await jobRow(up.body.id)).toMatchObject({ status: 'finished', rows_done: 9, attempts: 0 })
  })

  it('a committed batch starts the attempts anew: workers that restart during a long job do not fail it', async () => {
    const up = await api('POST', '/v2/jobs', { template_id: w.template.id, csv: csv(6) })
    // Four workers died during this job before any batch of it was made; the fifth stops after one batch.
    await w.t.db.query(`UPDATE jobs SET attempts = 4 WHERE id = $1`, [up.body.id])
    const stop = new AbortController()
    let hashed = 0
    const stopping = { hash: (s: string) => ((++hashed === 1 && stop.abort()), sealer.hash(s)), seal: (s: string) => sealer.seal(s), files: sealer.files } as unknown as Sealer
    expect(await engine({ batch: 3, sealer: stopping }).step(w.t.db, stop.signal)).toEqual({ rows: 3, stopped: 1 })
    expect(await jobRow(up.body.id)).toMatchObject({ attempts: 0, rows_read: 3, failed_at: null })
  })

  it('a job cancelled between batches stops before the next one and lets go of its claim', async () => {
    const up = await api('POST', '/v2/jobs', { template_id: w.template.id, csv: csv(6) })
    const slow = slowStore(up.body.id, csv(6), async () => expect((await callApi(w, 'POST', `/v2/jobs/${up.body.id}/cancel`)).status).toBe(200))
    const r = await engine({ batch: 3, store: slow }).step(w.t.db, go())
    expect(r).toEqual({ rows: 3, lost: 1 })
    const job = await jobRow(up.body.id)
    expect([job.status, job.claimed_by, job.rows_done]).toEqual(['cancelled', null, 3])
    const statuses = await w.t.db.query(`SELECT status, count(*)::int AS n FROM notifications WHERE job_id = $1 GROUP BY 1`, [up.body.id])
    expect(statuses).toEqual([{ status: 'cancelled', n: 3 }])
  })

  it('a job that fails is retried with backoff, then fails for good: status error, with its error', async () => {
    const up = await api('POST', '/v2/jobs', { template_id: w.template.id, csv: csv(2) })
    await w.t.db.query(`UPDATE jobs SET file_uri = $2 WHERE id = $1`, [up.body.id, `${jobStore}/gone.csv`])
    expect(await engine().step(w.t.db, go())).toEqual({ retrying: 1 })
    const first = await jobRow(up.body.id)
    expect(first).toMatchObject({ status: 'in progress', attempts: 1, claimed_by: null, failed_at: null, last_error: expect.stringContaining('ENOENT') })
    expect(first.retry_at.getTime()).toBeGreaterThan(Date.now())
    expect(await engine().step(w.t.db, go())).toEqual({})
    await w.t.db.query(`UPDATE jobs SET attempts = 4, retry_at = now() WHERE id = $1`, [up.body.id])
    expect(await engine().step(w.t.db, go())).toEqual({ failed: 1 })
    expect(await jobRow(up.body.id)).toMatchObject({ status: 'error', error: expect.stringContaining('ENOENT'), failed_at: expect.any(Date), attempts: 5 })
    expect((await api('GET', `/v2/jobs/${up.body.id}`)).body.status).toBe('error')
  })
})
