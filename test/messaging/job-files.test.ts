/**
 * Bulk-job files sealed at rest (issue 15, item 3): after an upload, no byte under HERALD_JOB_STORE (nor in the temp folder) holds a
 * number, in the form supplied or E.164, or a name or other value of the file; the file is 0600; the job still runs; a file changed,
 * cut short, swapped or replaced by plaintext fails the job with an error that quotes none of it; a file stored before sealing still runs.
 */
import { describe, expect, it } from 'vitest'
import { randomInt } from 'node:crypto'
import { readdirSync, readFileSync, statSync, truncateSync, writeFileSync, copyFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createLogger } from '../../src/log.ts'
import { jobsEngine } from '../../src/messaging/jobs/jobs.ts'
import { runRetention } from '../../src/messaging/retention/retention.ts'
import { LocalStore } from '../../src/storage/local.ts'
import { callApi, jobStore, messagingWorld, sealer } from '../helpers/messaging.ts'

const w = messagingWorld()
const store = new LocalStore(jobStore)
const engine = () => jobsEngine({ sealer, region: 'US', store }, createLogger('silent'))
const go = () => new AbortController().signal
const jobRow = async (id: string) => (await w.t.db.query('SELECT * FROM jobs WHERE id = $1', [id]))[0]

/** People made up afresh each run (so no other file could hold them by chance), their numbers in the forms people type. */
function people(n: number) {
  const tag = randomInt(1e6, 9e6)
  const first = randomInt(1000, 9000 - n)
  const forms = [(x: string) => `+1 212 555 ${x}`, (x: string) => `(212) 555-${x}`, (x: string) => `212.555.${x}`, (x: string) => `212555${x}`, (x: string) => `+1-212-555-${x}`]
  return Array.from({ length: n }, (_, i) => {
    const last4 = String(first + i)
    return { phone: forms[i % forms.length](last4), e164: `+1212555${last4}`, name: `Zyx${tag}Name${i}`, ref: `Qrf${tag}Ref${i}` }
  })
}
type Person = ReturnType<typeof people>[number]
const csvOf = (ps: Person[]) => ['phone number,name,ref', ...ps.map((p) => `${p.phone},${p.name},${p.ref}`)].join('\n')
/** Every way a person's number or values could show in a file. */
const forms = (p: Person) => [p.phone, p.e164, p.e164.slice(1), p.e164.slice(2), p.name, p.ref]

function filesUnder(dir: string, since = 0): string[] {
  const out: string[] = []
  let entries
  try {
    entries = readdirSync(dir, { withFileTypes: true })
  } catch {
    return out // not ours to read
  }
  for (const e of entries) {
    const path = join(dir, e.name)
    if (e.isDirectory()) out.push(...filesUnder(path, since))
    else if (e.isFile()) {
      try {
        const s = statSync(path)
        if (s.mtimeMs >= since && s.size < 64 << 20) out.push(path)
      } catch { /* gone meanwhile */ }
    }
  }
  return out
}

/** The forms found in any of the files, as "file: form" (none expected). */
function found(files: string[], ps: Person[]): string[] {
  const hits: string[] = []
  for (const f of files) {
    let text: string
    try {
      text = readFileSync(f).toString('latin1')
    } catch {
      continue
    }
    for (const p of ps) for (const form of forms(p)) if (text.includes(form)) hits.push(`${f}: ${form}`)
  }
  return hits
}

async function upload(ps: Person[]) {
  const res = await callApi(w, 'POST', '/v2/jobs', { template_id: w.template.id, csv: csvOf(ps), filename: 'people.csv' })
  const body = await res.json()
  expect(res.status, JSON.stringify(body)).toBe(201)
  return { id: body.id as string, file: (await jobRow(body.id)).file_uri as string }
}

describe('a bulk job file at rest', () => {
  it('holds no number (as supplied or E.164) and no value of the file, is 0600, and its job still runs', async () => {
    const since = Date.now() - 1000
    const ps = people(40)
    const { id, file } = await upload(ps)
    expect(file.startsWith(jobStore)).toBe(true)
    expect(statSync(file).mode & 0o777).toBe(0o600)
    const stored = filesUnder(jobStore)
    expect(stored).toContain(file)
    expect(found(stored, ps)).toEqual([])

    expect(await engine().step(w.t.db, go())).toEqual({ rows: 40 })
    expect(await jobRow(id)).toMatchObject({ status: 'finished', rows_done: 40 })
    const made = await w.t.db.query('SELECT job_row, recipient_ct, personalisation_ct FROM notifications WHERE job_id = $1 ORDER BY job_row', [id])
    expect(made).toHaveLength(40)
    expect(sealer.open(Buffer.from(made[1].recipient_ct))).toBe(ps[1].phone)
    expect(JSON.parse(sealer.open(Buffer.from(made[39].personalisation_ct)))).toEqual({ name: ps[39].name, ref: ps[39].ref })
    // Nor after the run, nor anywhere in the temp folder (no plaintext copy made on the way).
    expect(found(filesUnder(jobStore), ps)).toEqual([])
    expect(found(filesUnder(tmpdir(), since), ps)).toEqual([])
  })

  it('is deleted at retention, as before', async () => {
    const { id, file } = await upload(people(3))
    await engine().step(w.t.db, go())
    const [r] = await runRetention(w.t.db, { store, log: createLogger('silent'), asOf: new Date(Date.now() + 10 * 86400_000) })
    expect(r.files).toBe(1)
    expect(filesUnder(jobStore)).not.toContain(file)
    expect((await jobRow(id)).file_uri).toBeNull()
  })

  it('changed, cut short, swapped for another job\'s or replaced by plaintext: the job fails, its error quoting none of the file', async () => {
    const cases: [string, (file: string, other: string) => void, RegExp][] = [
      ['a byte changed', (f) => {
        const b = readFileSync(f)
        b[Math.floor(b.length / 2)] ^= 0x20
        writeFileSync(f, b)
      }, /integrity check/],
      ['cut short', (f) => truncateSync(f, statSync(f).size - 30), /cut short/],
      ["another job's file", (f, other) => copyFileSync(other, f), /integrity check/],
      ['replaced by plaintext', (f) => writeFileSync(f, csvOf(people(2))), /not sealed/],
    ]
    for (const [what, spoil, error] of cases) {
      const ps = people(5)
      const other = await upload(people(5))
      await w.t.db.query(`UPDATE jobs SET status = 'cancelled' WHERE id = $1`, [other.id])
      const { id, file } = await upload(ps)
      spoil(file, other.file)
      expect(await engine().step(w.t.db, go()), what).toEqual({ retrying: 1 })
      const job = await jobRow(id)
      expect(job.last_error, what).toMatch(error)
      for (const p of ps) for (const form of forms(p)) expect(job.last_error, what).not.toContain(form)
      expect(job.rows_done, what).toBe(0)
      // Tried again later, it fails for good the same way: status error, with the error.
      await w.t.db.query(`UPDATE jobs SET attempts = 4, retry_at = now() WHERE id = $1`, [id])
      expect(await engine().step(w.t.db, go()), what).toEqual({ failed: 1 })
      expect(await jobRow(id), what).toMatchObject({ status: 'error', error: expect.stringMatching(error) })
      expect(await w.t.db.query('SELECT id FROM notifications WHERE job_id = $1', [id]), what).toEqual([])
    }
  })

  it('a job stored before sealing (a plaintext .csv) still runs', async () => {
    const ps = people(4)
    const { id } = await upload(ps)
    const legacy = join(jobStore, `${id}.csv`)
    writeFileSync(legacy, csvOf(ps))
    await w.t.db.query(`UPDATE jobs SET file_uri = $2 WHERE id = $1`, [id, legacy])
    expect(await engine().step(w.t.db, go())).toEqual({ rows: 4 })
    expect(await jobRow(id)).toMatchObject({ status: 'finished', rows_done: 4 })
  })
})
