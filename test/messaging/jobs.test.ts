/** Bulk jobs: a CSV uploaded through the API, checked row by row, kept in the object store, turned into notifications in bulk; progress, scheduling, cancelling. */
import { describe, expect, it } from 'vitest'
import { existsSync, readdirSync, readFileSync } from 'node:fs'
import { createLogger } from '../../src/log.ts'
import { jobsEngine } from '../../src/messaging/jobs/jobs.ts'
import { LocalStore } from '../../src/storage/local.ts'
import { callApi, jobStore, messagingWorld, sealer } from '../helpers/messaging.ts'

const w = messagingWorld()
const engine = () => jobsEngine({ sealer, region: 'US', store: new LocalStore(jobStore) }, createLogger('silent'))

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
    expect(readFileSync(job.file_uri, 'utf8')).toContain('Person 4499')
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
    expect(readdirSync(jobStore).filter((f) => f.endsWith('.csv')).length).toBeGreaterThanOrEqual(2)
  })
})
