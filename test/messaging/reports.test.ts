/** Reports: a job's and a service's notifications as CSV, numbers decrypted row by row while kept, blank after retention; every row once across pages. */
import { describe, expect, it } from 'vitest'
import { parse } from 'csv-parse/sync'
import fc from 'fast-check'
import { createLogger } from '../../src/log.ts'
import { jobsEngine } from '../../src/messaging/jobs/jobs.ts'
import { REPORT_HEADER, reportCsv } from '../../src/messaging/reports/report.ts'
import { runRetention } from '../../src/messaging/retention/retention.ts'
import { LocalStore } from '../../src/storage/local.ts'
import { callApi, jobStore, messagingWorld, sealer } from '../helpers/messaging.ts'
import { seedNotifications } from '../helpers/notifications.ts'

const w = messagingWorld()
const log = createLogger('silent')
const store = new LocalStore(jobStore)
const rowsOf = (csv: string) => parse(csv, { columns: true }) as Record<string, string>[]
const retain = (asOf: Date) => runRetention(w.t.db, { store, log, asOf })
const HISTORY = `id, service_id, template_id, template_version, notification_type, api_key_id, key_type, job_id, job_row, reference,
  international, status, billable_units, rate_multiplier, provider, created_at, sent_at, completed_at, updated_at`

async function uploadJob(n: number) {
  const csv = ['phone number,name,ref', ...Array.from({ length: n }, (_, i) => `(212) 555-${String(2000 + i)},P${i},R${i}`)].join('\n')
  const res = await callApi(w, 'POST', '/v2/jobs', { template_id: w.template.id, csv, filename: 'people.csv' })
  const job = await res.json()
  await jobsEngine({ sealer, region: 'US', store }, log).step(w.t.db, new AbortController().signal)
  return job.id as string
}

describe('reports', () => {
  it("gives a job's rows with the numbers as uploaded, then, after retention, the same rows without them", async () => {
    const jobId = await uploadJob(3)
    await w.t.db.query(`UPDATE notifications SET status = 'delivered', provider = 'twilio', sent_at = created_at, completed_at = created_at WHERE job_row = 3`)
    const res = await callApi(w, 'GET', `/v2/jobs/${jobId}/report`)
    expect(res.status).toBe(200)
    expect(res.headers.get('content-type')).toContain('text/csv')
    const text = await res.text()
    expect(text.split('\n')[0]).toBe(REPORT_HEADER.join(','))
    const before = rowsOf(text)
    expect(before.map((r) => [r['Phone number'], r.Template, r.Status, r.Provider, r.Row, r.Job])).toEqual([
      ['(212) 555-2000', 'Result ready', 'created', '', '2', jobId],
      ['(212) 555-2001', 'Result ready', 'delivered', 'twilio', '3', jobId],
      ['(212) 555-2002', 'Result ready', 'created', '', '4', jobId],
    ])
    expect(before[1]['Sent at']).toMatch(/^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$/)

    await w.t.db.query(`UPDATE jobs SET finished_at = now() - interval '30 days', created_at = now() - interval '30 days'`)
    await w.t.db.query(`UPDATE notifications SET created_at = now() - interval '30 days'`)
    expect((await retain(new Date()))[0].archived).toBe(3)
    const after = rowsOf(await (await callApi(w, 'GET', `/v2/jobs/${jobId}/report`)).text())
    expect(after.map((r) => [r['Phone number'], r.Status, r.Row])).toEqual([['', 'created', '2'], ['', 'delivered', '3'], ['', 'created', '4']])
  })

  it("gives a service's notifications over local days, without test keys, in time order", async () => {
    await seedNotifications(w.t.db, w.service, w.template.id, [
      { at: '2026-11-20T04:59:00Z', phone: '+12125550001' }, // 19 November in New York
      { at: '2026-11-20T05:00:00Z', phone: '+12125550002' },
      { at: '2026-11-21T04:59:00Z', phone: '+12125550003' },
      { at: '2026-11-20T12:00:00Z', phone: '+12125550004', keyType: 'test' },
      { at: '2026-11-21T05:00:00Z', phone: '+12125550005' },
    ])
    await w.t.db.query(`UPDATE templates SET name = 'Result, "ready"'`) // a name that must be quoted
    const res = await callApi(w, 'GET', '/v2/reports/notifications?from=2026-11-20&to=2026-11-20')
    // A number starting with '+' has the apostrophe that keeps a spreadsheet from reading it as a sum (src/util/csv.ts).
    expect(rowsOf(await res.text()).map((r) => [r['Phone number'], r['Created at'], r.Template])).toEqual([
      ["'+12125550002", '2026-11-20 00:00:00', 'Result, "ready"'], ["'+12125550003", '2026-11-20 23:59:00', 'Result, "ready"']])
    const bad = await callApi(w, 'GET', '/v2/reports/notifications?from=2026-11-20&to=yesterday')
    expect(bad.status).toBe(400)
    expect((await bad.json()).errors[0].message).toBe('to yesterday is not a date (YYYY-MM-DD)')
    expect((await callApi(w, 'GET', '/v2/jobs/00000000-0000-4000-8000-000000000000/report')).status).toBe(404)
  })

  it('writes every row exactly once while retention moves rows between its pages', async () => {
    const n = 53
    const day = new Date(Date.now() - 20 * 86400_000)
    const local = day.toLocaleDateString('en-CA', { timeZone: 'America/New_York' })
    const ids = await seedNotifications(w.t.db, w.service, w.template.id, Array.from({ length: n }, (_, i) => ({
      at: new Date(day.getTime() + i * 1000), phone: `+1212555${String(3000 + i)}` })))
    const chunks: string[] = []
    const csv = reportCsv(w.t.db, sealer, { serviceId: w.service.id, from: local, to: local }, 7)
    for (let i = 0; i < 3; i++) chunks.push((await csv.next()).value as string) // header, then two pages
    expect((await retain(new Date()))[0].archived).toBe(n)
    for await (const chunk of csv) chunks.push(chunk)
    const rows = rowsOf(chunks.join(''))
    expect(rows).toHaveLength(n)
    // Two pages were written before retention and a third was being read: those have numbers, every later row none.
    const shown = rows.findIndex((r) => r['Phone number'] === '')
    expect(shown).toBeGreaterThanOrEqual(14)
    expect(shown).toBeLessThanOrEqual(21)
    expect(rows.slice(0, shown).map((r) => r['Phone number'])).toEqual(Array.from({ length: shown }, (_, i) => `'+1212555${3000 + i}`))
    expect(rows.slice(shown).every((r) => r['Phone number'] === '')).toBe(true)
    expect(new Set(rows.map((r) => r['Created at'])).size).toBe(n)
    expect(ids).toHaveLength(n)
  })

  it("gives a job's rows once each, in row order, in pages of row numbers: a row never made, rows in history, a row added while it runs", async () => {
    const jobId = await uploadJob(6) // rows 2…7
    await w.t.db.query(`DELETE FROM notifications WHERE job_id = $1 AND job_row = 4`, [jobId])
    await w.t.db.query(`WITH moved AS (DELETE FROM notifications WHERE job_id = $1 AND job_row < 4 RETURNING ${HISTORY})
      INSERT INTO notification_history (${HISTORY}) SELECT ${HISTORY} FROM moved`, [jobId])
    const csv = reportCsv(w.t.db, sealer, { serviceId: w.service.id, jobId }, 2)
    const chunks = [(await csv.next()).value as string, (await csv.next()).value as string] // the header, then rows 2 and 3
    await seedNotifications(w.t.db, w.service, w.template.id, [{ at: new Date(), phone: '+12125559999', jobId, jobRow: 12 }])
    for await (const chunk of csv) chunks.push(chunk)
    expect(rowsOf(chunks.join('')).map((r) => [r.Row, r['Phone number'], r.Job])).toEqual([
      ['2', '', jobId], ['3', '', jobId], ['5', '(212) 555-2003', jobId], ['6', '(212) 555-2004', jobId], ['7', '(212) 555-2005', jobId],
      ['12', "'+12125559999", jobId]])
  })
})

describe('opening the numbers a report shows (Sealer.open)', () => {
  const values = ['', '+12125550100', '(212) 555-0100', 'x'.repeat(16), 'y'.repeat(17), 'z'.repeat(32), 'zoë.ünï😀@example.com', 'q'.repeat(300)]

  it('opens every value sealed, whatever its length and characters', () => {
    expect(values.map((v) => sealer.open(sealer.seal(v)))).toEqual(values)
    fc.assert(fc.property(fc.string({ unit: 'binary', maxLength: 80 }), (t) => sealer.open(sealer.seal(t)) === t))
  })

  it('throws for a value changed anywhere: its key version, nonce, text or tag; and for a shortened tag', () => {
    const sealed = sealer.seal('+12125550100')
    for (let at = 0; at < sealed.length; at++) {
      const changed = Buffer.from(sealed)
      changed[at] ^= 0x10
      expect(() => sealer.open(changed), `byte ${at}`).toThrow()
    }
    expect(() => sealer.open(sealed.subarray(0, sealed.length - 4))).toThrow() // a 12-byte "tag" is not checked as one
  })
})
