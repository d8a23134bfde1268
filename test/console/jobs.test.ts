/**
 * Sending a file in the console: upload, the check page (every row's problem, nothing sent), send now
 * or schedule or cancel, the job's progress as the jobs and send engines run, its report; permissions.
 */
import { randomUUID } from 'node:crypto'
import { describe, expect, it } from 'vitest'
import { createLogger } from '../../src/log.ts'
import { jobsEngine } from '../../src/messaging/jobs/jobs.ts'
import { sendEngine } from '../../src/messaging/send/engine.ts'
import { registerProviders } from '../../src/messaging/send/providers.ts'
import { createService, createTemplate } from '../../src/messaging/services.ts'
import { LocalStore } from '../../src/storage/local.ts'
import type { Db } from '../../src/db/types.ts'
import { consoleWorld, makeUser, Visitor } from '../helpers/console.ts'
import { jobStore, sealer } from '../helpers/messaging.ts'

const w = consoleWorld()
const go = () => new AbortController().signal

/** Posts a file as a browser's form does (multipart, field `file`), with the CSRF token of the page last seen. */
async function uploadFile(v: Visitor, path: string, csv: string, name = 'people.csv') {
  const form = new FormData()
  form.append('_csrf', /name="_csrf" value="([^"]+)"/.exec(v.lastHtml)?.[1] ?? '')
  form.append('file', new Blob([csv], { type: 'text/csv' }), name)
  return (v as unknown as { send: (p: string, init: RequestInit) => Promise<Response & { html: string }> }).send(path, { method: 'POST', body: form })
}

/** Turns a started job's rows into texts, and hands them to a provider that takes everything. */
async function runJob(db: Db) {
  await jobsEngine({ sealer, region: 'US', store: new LocalStore(jobStore) }, createLogger('silent')).step(db, go())
  await registerProviders(db, ['fake'])
  const provider = { name: 'fake', send: async () => randomUUID(), close: async () => {} }
  await sendEngine({ providers: [provider], sealer, region: 'US', concurrency: 4, recoverySeconds: 300, log: createLogger('silent'), workerId: 'test' }).step(db, go())
}

async function setUp(db: Db) {
  const service = await createService(db, { name: 'Test results', smsSender: 'NYSDOH' })
  const other = await createService(db, { name: 'Other county', smsSender: 'OTHER' })
  const template = await createTemplate(db, service.id, 'Result ready', 'Hello ((name)), your result is ready.', 'tester')
  await makeUser(db, 'sender@agency.example', { services: { [service.id]: ['send_messages', 'view_activity'] } })
  await makeUser(db, 'viewer@agency.example', { services: { [service.id]: ['view_activity'] } })
  await makeUser(db, 'outsider@agency.example', { services: { [other.id]: ['send_messages', 'view_activity'] } })
  return { service, other, template, base: `/services/${service.id}` }
}

const GOOD = ['phone number,name', '+1 212 555 0100,Ada', '(212) 555-0101,Bo', '212.555.0102,Cy'].join('\n')

async function uploaded(v: Visitor, base: string, tid: string, csv: string) {
  await v.get(`${base}/upload/${tid}`)
  const up = await uploadFile(v, `${base}/upload/${tid}`, csv)
  expect(up.status).toBe(302)
  const check = up.headers.get('location')!
  expect(check).toMatch(new RegExp(`^${base}/jobs/[0-9a-f-]{36}/check$`))
  return { check, id: check.split('/')[4] }
}

describe('the console: sending a file', () => {
  it('lists every bad row with its row number and problem on the check page, and sends nothing', async () => {
    const { template, base } = await setUp(w.db)
    const v = await new Visitor(w.url).signIn('sender@agency.example')
    const form = await v.get(`${base}/upload/${template.id}`)
    expect(form.status).toBe(200)
    expect(form.html).toContain('enctype="multipart/form-data"')
    const csv = ['phone number,name', '+1 212 555 0100,Ada', '12,Bo', '+1 212 555 0102,', '212-555-CALL,Cy', '+1 900 555 0100,Di', '+1 212 555 0105,Ed'].join('\n')
    const { check, id } = await uploaded(v, base, template.id, csv)
    const page = await v.get(check)
    expect(page.status).toBe(200)
    expect(page.html).toContain('There is a problem with people.csv')
    expect(page.html).toContain('You need to fix 4 of 6 rows')
    for (const [row, problem] of [[3, 'phone_number Not enough digits'], [4, 'Missing personalisation: name'], [5, 'phone_number Must not contain letters or symbols']]) {
      expect(page.html).toMatch(new RegExp(`<th scope="row">${row}</th><td>${problem}</td>`))
    }
    expect(page.html).toMatch(/<th scope="row">6<\/th><td>phone_number /) // a premium-rate number is not a mobile
    expect(page.html).not.toMatch(/<th scope="row">(2|7)<\/th>/)
    expect(page.html).not.toContain('name="when"')
    // Nothing sent, nothing of the file kept.
    expect(await w.db.query('SELECT 1 FROM notifications')).toHaveLength(0)
    const [job] = await w.db.query('SELECT status, file_uri, bad_rows FROM jobs WHERE id = $1', [id])
    expect(job).toEqual({ status: 'uploaded', file_uri: null, bad_rows: 4 })
    const start = await v.post(`${base}/jobs/${id}/start`, { when: 'now' })
    expect(start.status).toBe(400)
    expect(start.html).toContain('This file has problems')
    // A file without the columns is named as such.
    const { check: c2 } = await uploaded(v, base, template.id, 'mobile,name\n1,2')
    expect((await v.get(c2)).html).toContain('Missing column: phone number')
    const empty = await uploadFile(v, `${base}/upload/${template.id}`, '')
    expect(empty.status).toBe(400)
    expect(empty.html).toContain('usa-form-group--error')
  })

  it('sends a good file now: the job runs, its page shows progress and counts, the list and its report show it', async () => {
    const { template, base } = await setUp(w.db)
    const v = await new Visitor(w.url).signIn('sender@agency.example')
    const { check, id } = await uploaded(v, base, template.id, GOOD)
    const page = await v.get(check)
    expect(page.html).toContain('All 3 rows checked: no problems')
    expect(page.html).toContain('Send 3 text messages')
    expect(await w.db.query('SELECT 1 FROM notifications')).toHaveLength(0)
    const start = await v.post(`${base}/jobs/${id}/start`, { when: 'now' })
    expect(start.status).toBe(302)
    expect(start.headers.get('location')).toBe(`${base}/jobs/${id}`)
    const waiting = await v.get(`${base}/jobs/${id}`)
    expect(waiting.html).toContain('<strong>pending</strong>')
    expect(waiting.html).toContain('data-job-progress="live"')
    // Started once only.
    const twice = await v.post(`${base}/jobs/${id}/start`, { when: 'now' })
    expect(twice.status).toBe(400)
    expect(twice.html).toContain('This job is pending: it cannot be started again')
    expect((await w.db.query('SELECT status FROM jobs WHERE id = $1', [id]))[0].status).toBe('pending')

    await runJob(w.db)
    await w.db.query(`UPDATE notifications SET status = 'delivered' WHERE job_row = 2`)
    await w.db.query(`UPDATE notifications SET status = 'permanent-failure' WHERE job_row = 3`)
    const done = await v.get(`${base}/jobs/${id}`)
    expect(done.html).toContain('<strong>finished</strong>')
    expect(done.html).toContain('3 of 3 text messages created')
    const count = (label: string) => new RegExp(`text-bold">(\\d+)</p><p class="margin-top-0">${label}<`).exec(done.html)?.[1]
    expect([count('sending'), count('delivered'), count('failed')]).toEqual(['1', '1', '1'])
    expect(done.html).toContain('data-job-progress="live"') // a text still sending: still worth watching

    const list = await v.get(`${base}/jobs`)
    expect(list.status).toBe(200)
    expect(list.html).toContain('people.csv')
    expect(list.html).toContain('Result ready')
    expect(list.html).toMatch(/finished<\/td>\s*<td class="text-right">3<\/td><td class="text-right">1<\/td><td class="text-right">1<\/td><td class="text-right">1<\/td>/)

    const report = await v.get(`${base}/jobs/${id}/report.csv`)
    expect(report.status).toBe(200)
    expect(report.headers.get('content-type')).toMatch(/text\/csv/)
    const lines = report.html.trim().split('\n')
    expect(lines[0]).toBe('Phone number,Template,Status,Failure reason,Provider,Created at,Sent at,Completed at,Job,Row,Reference')
    expect(lines.slice(1).map((l) => l.split(',')[0])).toEqual(["'+1 212 555 0100", '(212) 555-0101', '212.555.0102']) // a leading + is a formula to a spreadsheet
    expect(lines[1]).toContain(',delivered,')
  })

  it('schedules a job for a time it offers (up to 4 days ahead), refuses others, and cancels', async () => {
    const { template, base } = await setUp(w.db)
    const v = await new Visitor(w.url).signIn('sender@agency.example')
    const { check, id } = await uploaded(v, base, template.id, GOOD)
    const page = await v.get(check)
    const slots = [...page.html.matchAll(/<option value="([^"]+)"/g)].map((m) => m[1])
    expect(slots[0]).toBe('now')
    expect(slots).toHaveLength(1 + 96)
    for (const bad of ['tomorrow', new Date(Date.now() + 10 * 86_400_000).toISOString(), new Date(Date.now() - 3600_000).toISOString()]) {
      const r = await v.post(`${base}/jobs/${id}/start`, { when: bad })
      expect(r.status).toBe(400)
      expect(r.html).toContain('id="when-error"')
    }
    const at = slots[3]
    expect((await v.post(`${base}/jobs/${id}/start`, { when: at })).status).toBe(302)
    const [job] = await w.db.query('SELECT status, scheduled_for, retry_at FROM jobs WHERE id = $1', [id])
    expect(job.status).toBe('scheduled')
    expect(new Date(job.scheduled_for).toISOString()).toBe(at)
    expect(new Date(job.retry_at).toISOString()).toBe(at)
    const shown = await v.get(`${base}/jobs/${id}`)
    expect(shown.html).toContain('<strong>scheduled</strong>, to be sent')
    expect(shown.html).toContain('Cancel sending')
    const cancel = await v.post(`${base}/jobs/${id}/cancel`)
    expect(cancel.status).toBe(302)
    expect((await w.db.query('SELECT status FROM jobs WHERE id = $1', [id]))[0].status).toBe('cancelled')
    expect((await v.post(`${base}/jobs/${id}/cancel`)).status).toBe(400)
    // An upload cancelled on its check page: back to choosing a file, never sent.
    const second = await uploaded(v, base, template.id, GOOD)
    await v.get(second.check)
    const back = await v.post(`${base}/jobs/${second.id}/cancel`)
    expect(back.headers.get('location')).toBe(`${base}/upload/${template.id}`)
    expect((await w.db.query('SELECT status FROM jobs WHERE id = $1', [second.id]))[0].status).toBe('cancelled')
    await runJob(w.db)
    expect(await w.db.query('SELECT 1 FROM notifications')).toHaveLength(0)
  })

  it('needs send_messages to upload, start and cancel, view_activity to see jobs; another service’s job is not there', async () => {
    const { template, other, base } = await setUp(w.db)
    const sender = await new Visitor(w.url).signIn('sender@agency.example')
    const { id } = await uploaded(sender, base, template.id, GOOD)
    await sender.post(`${base}/jobs/${id}/start`, { when: 'now' })

    const viewer = await new Visitor(w.url).signIn('viewer@agency.example')
    expect((await viewer.get(`${base}/jobs`)).status).toBe(200)
    expect((await viewer.get(`${base}/jobs/${id}`)).status).toBe(200)
    expect((await viewer.get(`${base}/upload/${template.id}`)).status).toBe(403)
    expect((await viewer.get(`${base}/jobs/${id}/check`)).status).toBe(403)
    expect((await viewer.post(`${base}/jobs/${id}/cancel`)).status).toBe(403)
    expect((await viewer.post(`${base}/jobs/${id}/start`, { when: 'now' })).status).toBe(403)

    const sendOnly = await makeUser(w.db, 'sendonly@agency.example', {})
    await w.db.query(`INSERT INTO service_users (user_id, service_id, permissions) SELECT $1, id, ARRAY['send_messages'] FROM services WHERE name = 'Test results'`, [sendOnly])
    const s = await new Visitor(w.url).signIn('sendonly@agency.example')
    expect((await s.get(`${base}/jobs`)).status).toBe(403)
    expect((await s.get(`${base}/jobs/${id}/report.csv`)).status).toBe(403)

    const outsider = await new Visitor(w.url).signIn('outsider@agency.example')
    const list = await outsider.get(`${base}/jobs`)
    expect(list.status).toBe(403)
    expect(list.html).not.toContain('people.csv')
    // Its own service, another service's job id: not there.
    for (const path of [`/services/${other.id}/jobs/${id}`, `/services/${other.id}/jobs/${id}/report.csv`, `/services/${other.id}/jobs/${id}/check`]) {
      const r = await outsider.get(path)
      expect(r.status).toBe(404)
      expect(r.html).not.toContain('people.csv')
    }
    expect((await outsider.get(`/services/${other.id}/upload/${template.id}`)).status).toBe(404)
    await outsider.get(`/services/${other.id}/jobs`)
    expect((await outsider.post(`/services/${other.id}/jobs/${id}/cancel`)).status).toBe(404)
    expect((await w.db.query('SELECT status FROM jobs WHERE id = $1', [id]))[0].status).toBe('pending')
  })
})
