/** Outbound case sync against the CommCare sandbox: posts, transfers and duplicates, retries, failures. */
import { describe, expect, it } from 'vitest'
import { claimJobs } from '../../src/casesync/jobs.ts'
import { loadCases } from '../../src/casesync/cases.ts'
import { outboundQueue } from '../../src/casesync/queue.ts'
import type { Db } from '../../src/db/types.ts'
import { retry } from '../../src/engine/queue.ts'
import { readCounties } from '../../src/link/counties.ts'
import { casesync, caseOf, syncedPerson, dueNow, events, expireLeases, labResults, linkRows, patients, startSandbox, syncAll } from '../helpers/casesync.ts'
import { row } from '../helpers/files.ts'
import { count, freshDbEachTest } from '../helpers/link.ts'

const ALBANY = 'ny-albany-cdcms'
const ALLEGANY = 'ny-allegany-cdcms'
let db: Db
let dir: string
freshDbEachTest((d, x) => {
  db = d
  dir = x
})


describe('outbound case sync', () => {
  it('creates the patient case with its lab result in the county domain, and forgets the job', async () => {
    const { s, c } = await syncedPerson(db, dir, 'K1')
    const [p] = patients(s, ALBANY)
    expect(p.case_id).toBe(c.case_id)
    expect(p.properties.external_id).toBe(c.data.external_id)
    expect(p.properties.first_name).toBe('TESTFIRST')
    expect(p.user_id).toBe('herald')
    const [r] = labResults(s, ALBANY)
    expect(r.properties.accession_number).toBe('K1-A1')
    expect(r.indices.parent).toMatchObject({ case_id: c.case_id, case_type: 'patient', relationship: 'child' }) // HERALD_COMMCARE_LAB_RESULT_INDEX's default
    expect(await count(db, 'case_sync_queue')).toBe(0)
    expect(c.synced_at).not.toBeNull()
    expect((await events(db, c.id)).map((e) => e.kind)).toEqual(['posted'])
  })

  it('posts a later result to the same case, never overwriting what an investigator wrote', async () => {
    const { s, cs, c } = await syncedPerson(db, dir, 'K2')
    s.edit(ALBANY, c.case_id, { first_name: 'Corrected', case_notes: 'called twice' })
    await linkRows(db, dir, [row(3, { PIDPATIENTKEY: 'K2', PIDCOUNTYCODE: '1', OBRACCESSIONNUM: 'K2-A2', PIDLASTNAME: 'X' })])
    expect(await syncAll(db, cs.out)).toEqual({ posted: 1 })
    expect(patients(s)).toHaveLength(1)
    const p = s.getCase(ALBANY, c.case_id)!
    expect(p.properties.first_name).toBe('Corrected')
    expect(p.properties.case_notes).toBe('called twice')
    expect(p.properties.new_lab_result_received).toBe('yes')
    expect(labResults(s).map((r) => r.properties.accession_number).sort()).toEqual(['K2-A1', 'K2-A2'])
  })

  it('keeps one job per case: a second change before the post bumps its generation', async () => {
    const s = await startSandbox()
    await linkRows(db, dir, [row(3, { PIDPATIENTKEY: 'K3', PIDCOUNTYCODE: '1', OBRACCESSIONNUM: 'K3-A1' })])
    await linkRows(db, dir, [row(3, { PIDPATIENTKEY: 'K3', PIDCOUNTYCODE: '1', OBRACCESSIONNUM: 'K3-A2' })])
    expect(await db.query('SELECT generation FROM case_sync_queue')).toEqual([{ generation: 2 }])
    expect(await syncAll(db, casesync(s).out)).toEqual({ posted: 1 })
    expect(labResults(s)).toHaveLength(2)
  })

  it('leaves the job for another round when the case changed while its post was in flight', async () => {
    const s = await startSandbox()
    const cs = casesync(s)
    await linkRows(db, dir, [row(3, { PIDPATIENTKEY: 'K4', PIDCOUNTYCODE: '1' })])
    const [job] = await claimJobs(db, 'test', 10)
    await db.query('UPDATE case_sync_queue SET generation = generation + 1')
    expect(await cs.out.syncJob(db, job, (await loadCases(db, [job.indexCaseId])).get(job.indexCaseId), await readCounties(db))).toBe('posted')
    expect(await db.query('SELECT generation, claimed_by, attempts FROM case_sync_queue')).toEqual([{ generation: 2, claimed_by: null, attempts: 0 }])
    expect(await syncAll(db, cs.out)).toEqual({ unchanged: 1 })
    expect(await count(db, 'case_sync_queue')).toBe(0)
  })

  it('follows a transfer to the other county: the local destination case gets the lab results', async () => {
    const { s, cs, c } = await syncedPerson(db, dir, 'K5')
    const dest = s.transfer(ALBANY, c.case_id, 3)!
    await linkRows(db, dir, [row(3, { PIDPATIENTKEY: 'K5', PIDCOUNTYCODE: '1', OBRACCESSIONNUM: 'K5-A2' })])
    expect(await syncAll(db, cs.out)).toEqual({ redirected: 1 })
    const local = await caseOf(db, `case_id = '${dest.case_id}'`)
    expect(local.county_fips).toBe(3)
    expect((await db.query('SELECT accession_number FROM lab_results WHERE index_case_id = $1 ORDER BY 1', [local.id])).map((r) => r.accession_number))
      .toEqual(['K5-A1', 'K5-A2'])
    expect(labResults(s, ALLEGANY).map((r) => [r.properties.accession_number, r.indices.parent.case_id]).sort())
      .toEqual([['K5-A1', dest.case_id], ['K5-A2', dest.case_id]])
    expect(labResults(s, ALBANY)).toHaveLength(1) // the origin got nothing new
    const [ev] = await events(db, c.id)
    expect(ev.kind).toBe('posted')
    expect((await events(db, c.id))[1]).toMatchObject({ kind: 'redirected', detail: { to_case: dest.case_id, domain: ALLEGANY } })
  })

  it('follows a chain of duplicates, and stops at a dead end on the last case found', async () => {
    const { s, cs, c } = await syncedPerson(db, dir, 'K6')
    const b = s.createCase(ALBANY, { case_name: 'B', external_id: c.data.external_id })
    const cc = s.createCase(ALBANY, { case_name: 'C', external_id: c.data.external_id })
    s.markDuplicate(ALBANY, c.case_id, b.case_id)
    s.markDuplicate(ALBANY, b.case_id, cc.case_id)
    s.markDuplicate(ALBANY, cc.case_id, 'no-such-case')
    await linkRows(db, dir, [row(3, { PIDPATIENTKEY: 'K6', PIDCOUNTYCODE: '1', OBRACCESSIONNUM: 'K6-A2' })])
    expect(await syncAll(db, cs.out)).toEqual({ redirected: 1 })
    expect(labResults(s).filter((r) => r.indices.parent.case_id === cc.case_id)).toHaveLength(2)
    const redirected = (await events(db, c.id)).find((e) => e.kind === 'redirected')!
    expect(redirected.detail.chain).toEqual([c.case_id, b.case_id, cc.case_id].map((id) => `${ALBANY}/${id}`))
    expect(redirected.detail.dead_end).toMatch(/duplicate_of_case_id names no case/)
  })

  it('never posts to the county the person left when a transfer leads nowhere: the job waits for an operator (transfer.test.ts)', async () => {
    const { s, cs, c } = await syncedPerson(db, dir, 'K7')
    s.transfer(ALBANY, c.case_id, 3, { createDestination: false })
    await linkRows(db, dir, [row(3, { PIDPATIENTKEY: 'K7', PIDCOUNTYCODE: '1', OBRACCESSIONNUM: 'K7-A2' })])
    expect(await syncAll(db, cs.out)).toEqual({ unresolved_transfer: 1 })
    expect(labResults(s, ALBANY)).toHaveLength(1)
    expect((await events(db, c.id)).at(-1)).toMatchObject({ kind: 'unresolved_transfer', detail: { why: 'no search result' } })
  })

  it('ends a job in a duplicate cycle with an event, without looping or posting', async () => {
    const { s, cs, c } = await syncedPerson(db, dir, 'K8')
    const b = s.createCase(ALBANY, { case_name: 'B' })
    s.markDuplicate(ALBANY, c.case_id, b.case_id)
    s.markDuplicate(ALBANY, b.case_id, c.case_id)
    await linkRows(db, dir, [row(3, { PIDPATIENTKEY: 'K8', PIDCOUNTYCODE: '1', OBRACCESSIONNUM: 'K8-A2' })])
    const before = s.stats.submissions
    expect(await syncAll(db, cs.out)).toEqual({ cycle: 1 })
    expect(s.stats.submissions).toBe(before)
    expect((await events(db, c.id)).at(-1)).toMatchObject({ kind: 'cycle', detail: { chain: [c.case_id, b.case_id, c.case_id].map((id) => `${ALBANY}/${id}`) } })
    expect(await db.query('SELECT failed_at IS NOT NULL AS failed FROM case_sync_queue')).toEqual([{ failed: true }])
  })

  it('waits out a 429 as told without spending an attempt, then posts', async () => {
    const s = await startSandbox({ rateLimit: { every: 0, burst: 1, retryAfterSeconds: 1 } })
    const cs = casesync(s)
    await linkRows(db, dir, [row(3, { PIDPATIENTKEY: 'K9', PIDCOUNTYCODE: '1' })])
    expect(await syncAll(db, cs.out)).toEqual({ rate_limited: 1 })
    const [q] = await db.query(`SELECT attempts, retry_at > now() + interval '0.5 s' AS later, claimed_by FROM case_sync_queue`)
    expect(q).toEqual({ attempts: 0, later: true, claimed_by: null })
    expect((await events(db, (await caseOf(db)).id)).at(-1)).toMatchObject({ kind: 'postponed', detail: { attempts: 0, retry_after_seconds: 1 } })
    s.knobs.rateLimit = undefined
    await new Promise((r) => setTimeout(r, 1100))
    expect(await syncAll(db, cs.out)).toEqual({ posted: 1 })
    expect(patients(s)).toHaveLength(1)
  })

  it('retries a 5xx with backoff, then posts', async () => {
    const s = await startSandbox({ failureRate: 1 })
    const cs = casesync(s)
    await linkRows(db, dir, [row(3, { PIDPATIENTKEY: 'K10', PIDCOUNTYCODE: '1' })])
    expect(await syncAll(db, cs.out)).toEqual({ retrying: 1 })
    // The spec's first wait: 30 s ±10%.
    const { baseSeconds, jitter } = outboundQueue.retry
    const [q] = await db.query(`SELECT attempts, extract(epoch FROM retry_at - now())::float8 AS wait, last_error FROM case_sync_queue`)
    expect(q).toMatchObject({ attempts: 1, last_error: expect.stringMatching(/HTTP 500/) })
    expect(q.wait).toBeGreaterThan(baseSeconds * (1 - jitter) - 2)
    expect(q.wait).toBeLessThan(baseSeconds * (1 + jitter) + 0.1)
    expect((await events(db, (await caseOf(db)).id)).at(-1)).toMatchObject({ kind: 'retrying', detail: { attempts: 1 } })
    s.knobs.failureRate = 0
    await dueNow(db)
    expect(await syncAll(db, cs.out)).toEqual({ posted: 1 })
    expect(await count(db, 'case_sync_queue')).toBe(0)
  })

  it('re-posts after a post that landed but was never recorded, creating no second case', async () => {
    const s = await startSandbox({ latencyMs: 600 })
    const cs = casesync(s, { HERALD_COMMCARE_TIMEOUT_MS: '300' })
    await linkRows(db, dir, [row(3, { PIDPATIENTKEY: 'K11', PIDCOUNTYCODE: '1' })])
    expect(await syncAll(db, cs.out)).toEqual({ retrying: 1 })
    expect(patients(s)).toHaveLength(1) // CommCare has it; Herald does not know
    s.knobs.latencyMs = 0
    await dueNow(db)
    expect(await syncAll(db, cs.out)).toEqual({ posted: 1 })
    expect(patients(s)).toHaveLength(1)
    expect(labResults(s)).toHaveLength(1)
  })

  it('fails a case out of attempts visibly, and posts it again on retry', async () => {
    const s = await startSandbox({ failureRate: 1 })
    const cs = casesync(s)
    await linkRows(db, dir, [row(3, { PIDPATIENTKEY: 'K12', PIDCOUNTYCODE: '1' })])
    const max = outboundQueue.retry.maxAttempts
    await db.query('UPDATE case_sync_queue SET attempts = $1', [max - 1])
    expect(await syncAll(db, cs.out)).toEqual({ failed: 1 })
    const c = await caseOf(db)
    expect((await events(db, c.id)).at(-1)).toMatchObject({ kind: 'failed', detail: { attempts: max, reason: 'out of attempts' } })
    expect(await syncAll(db, cs.out)).toEqual({})
    s.knobs.failureRate = 0
    expect(await retry(db, outboundQueue)).toEqual([c.id])
    expect((await events(db, c.id)).at(-1)).toMatchObject({ kind: 'retry_requested' })
    expect(await syncAll(db, cs.out)).toEqual({ posted: 1 })
  })

  it('fails at once a form CommCare refuses', async () => {
    const s = await startSandbox()
    const cs = casesync(s)
    await linkRows(db, dir, [row(3, { PIDPATIENTKEY: 'K13', PIDCOUNTYCODE: '1' })])
    // A case CommCare's other domain holds: the receiver refuses the form (400).
    const c = await caseOf(db)
    s.createCase(ALLEGANY, { case_name: 'elsewhere' })
    await db.query(`UPDATE index_cases SET case_id = $1`, [s.cases(ALLEGANY)[0].case_id])
    expect(await syncAll(db, cs.out)).toEqual({ failed: 1 })
    expect((await events(db, c.id)).at(-1)).toMatchObject({ kind: 'failed', detail: { reason: 'refused' } })
  })

  it('does not post a job whose lease ran out and another worker took over', async () => {
    const s = await startSandbox()
    const cs = casesync(s)
    await linkRows(db, dir, [row(3, { PIDPATIENTKEY: 'K15', PIDCOUNTYCODE: '1' })])
    const [job] = await claimJobs(db, 'test', 10) // this worker: 'test'
    await expireLeases(db)
    const [taken] = await claimJobs(db, 'other', 10)
    expect(taken).toMatchObject({ indexCaseId: job.indexCaseId, attempts: 1 }) // a lost lease counts an attempt
    const c = (await loadCases(db, [job.indexCaseId])).get(job.indexCaseId)
    expect(await cs.out.syncJob(db, job, c, await readCounties(db))).toBe('taken_over')
    expect(s.stats.submissions).toBe(0)
    expect(await db.query('SELECT claimed_by, attempts, failed_at FROM case_sync_queue')).toEqual([{ claimed_by: 'other', attempts: 1, failed_at: null }])
    expect(await events(db, job.indexCaseId)).toEqual([])
  })

  it('does not post a job whose lease ran out while it resolved a transfer, once another worker holds it', async () => {
    const { s, cs, c } = await syncedPerson(db, dir, 'K16')
    await linkRows(db, dir, [row(3, { PIDPATIENTKEY: 'K16', PIDCOUNTYCODE: '1', OBRACCESSIONNUM: 'K16-A2' })])
    const [job] = await claimJobs(db, 'test', 10)
    const local = (await loadCases(db, [job.indexCaseId])).get(job.indexCaseId)
    // CommCare answers the chain's first request only after another worker has taken the job over.
    const getCase = cs.client.getCase.bind(cs.client)
    cs.client.getCase = async (...args) => {
      await expireLeases(db)
      await claimJobs(db, 'other', 10)
      return getCase(...args)
    }
    const before = s.stats.submissions
    expect(await cs.out.syncJob(db, job, local, await readCounties(db))).toBe('taken_over')
    expect(s.stats.submissions).toBe(before)
    expect(labResults(s)).toHaveLength(1)
    expect(await db.query('SELECT claimed_by FROM case_sync_queue')).toEqual([{ claimed_by: 'other' }])
    expect((await events(db, c.id)).map((e) => e.kind)).toEqual(['posted'])
  })

  it('stops at the stop signal and gives back what it claimed', async () => {
    const s = await startSandbox()
    const cs = casesync(s, { HERALD_COMMCARE_CONCURRENCY: '1' }) // claims two jobs at a time
    await linkRows(db, dir, Array.from({ length: 5 }, (_, i) => row(3, { PIDPATIENTKEY: `K17-${i}`, PIDCOUNTYCODE: '1' })))
    const stop = new AbortController()
    const submit = cs.client.submitForm.bind(cs.client)
    cs.client.submitForm = async (...args) => {
      stop.abort() // the stop comes while the first form is in flight
      return submit(...args)
    }
    expect(await cs.out.step(db, stop.signal)).toEqual({ posted: 1 })
    expect(s.stats.submissions).toBe(1)
    expect(await count(db, 'case_sync_queue')).toBe(4)
    expect(await count(db, 'case_sync_queue', 'claimed_by IS NULL AND claimed_until IS NULL AND attempts = 0')).toBe(4)
  })

  it('posts nothing while posting is off', async () => {
    const s = await startSandbox()
    await linkRows(db, dir, [row(3, { PIDPATIENTKEY: 'K14', PIDCOUNTYCODE: '1' })])
    expect(await syncAll(db, casesync(s, { HERALD_COMMCARE_POSTING: 'off' }).out)).toEqual({})
    expect(s.stats.requests).toBe(0)
    expect(await count(db, 'case_sync_queue')).toBe(1)
  })
})
