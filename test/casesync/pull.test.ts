/**
 * Pulled cases as New York's project spaces hold them (issue 16): the skip rules, blanks that never
 * overwrite, external ids that are not uuids, the first poll's start date, a bare-array county list,
 * and failed polls that an --until-idle run reports.
 */
import { execFile } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { describe, expect, it } from 'vitest'
import Fastify from 'fastify'
import { forwarderRoutes } from '../../src/casesync/forwarder.ts'
import { fetchCounties } from '../../src/casesync/index.ts'
import { importCase, skippedByReason } from '../../src/casesync/inbound.ts'
import { pollDomain } from '../../src/casesync/poll.ts'
import type { Db } from '../../src/db/types.ts'
import { readCounties } from '../../src/link/counties.ts'
import { caseOf, casesync, events, linkRows, startSandbox, syncedPerson } from '../helpers/casesync.ts'
import { createTestDb, onPostgres } from '../helpers/db.ts'
import { row, tempDir } from '../helpers/files.ts'
import { COUNTY_LIST, count, freshDbEachTest, loadCounties } from '../helpers/link.ts'

const ALBANY = 'ny-albany-cdcms'
const ALLEGANY = 'ny-allegany-cdcms'
const DAY = 86_400_000
let db: Db
let dir: string
freshDbEachTest((d, x) => {
  db = d
  dir = x
})

const patient = (extra: Record<string, string> = {}) => ({ case_type: 'patient', case_name: 'P', first_name: 'Pulled', last_name: 'Person', dob: '1980-02-03', ...extra })
/** Polls a domain now, whatever its schedule says. */
async function poll(client: ReturnType<typeof casesync>['client'], domain = ALBANY, pullSince?: Date) {
  await db.query('UPDATE commcare_cursors SET retry_at = NULL')
  return pollDomain(db, client, domain, await readCounties(db), { worker: 'test', pollSeconds: 60, pullSince })
}
const skipped = () => db.query('SELECT case_id, domain, reason, modified_at FROM commcare_skipped_cases ORDER BY reason')

describe('pulled cases: the import rules', () => {
  it('skips a new case with no name and date of birth, a stub, a final disposition or a pending transfer, once each, with its reason', async () => {
    const s = await startSandbox()
    const { client } = casesync(s)
    const blank = s.createCase(ALBANY, { case_type: 'patient', case_name: '', first_name: '', last_name: '  ', full_name: '', dob: '' })
    const stub = s.createCase(ALBANY, patient({ stub: 'yes', last_name: 'Stub' }))
    const disposed = s.createCase(ALBANY, patient({ final_disposition: 'registered_in_error', last_name: 'Error' }))
    const pending = s.createCase(ALBANY, patient({ transfer_status: 'pending', last_name: 'Pending' }))
    const sent = s.createCase(ALLEGANY, patient({ transfer_status: 'sent', last_name: 'Sent' }))
    s.createCase(ALBANY, patient({ transfer_status: 'complete', stub: 'no', last_name: 'Kept' }))
    s.createCase(ALBANY, { case_type: 'patient', case_name: 'dob only', dob: '1999-09-09' }) // a date of birth alone is enough
    expect(await poll(client)).toEqual({ skipped: 4, new_person: 2 })
    expect(await poll(client, ALLEGANY)).toEqual({ skipped: 1 })
    expect(await db.query('SELECT case_id, domain, reason FROM commcare_skipped_cases ORDER BY reason, domain')).toEqual([
      { case_id: disposed.case_id, domain: ALBANY, reason: 'final disposition' },
      { case_id: blank.case_id, domain: ALBANY, reason: 'no name and date of birth' },
      { case_id: stub.case_id, domain: ALBANY, reason: 'stub' },
      { case_id: pending.case_id, domain: ALBANY, reason: 'transfer pending' },
      { case_id: sent.case_id, domain: ALLEGANY, reason: 'transfer pending' },
    ])
    expect(await skippedByReason(db)).toEqual([
      { domain: ALBANY, reason: 'final disposition', count: 1 },
      { domain: ALBANY, reason: 'no name and date of birth', count: 1 },
      { domain: ALBANY, reason: 'stub', count: 1 },
      { domain: ALBANY, reason: 'transfer pending', count: 1 },
      { domain: ALLEGANY, reason: 'transfer pending', count: 1 },
    ])
    expect(await db.query('SELECT last_name FROM people ORDER BY id')).toEqual([{ last_name: 'Kept' }, { last_name: null }])
    // The overlap reads them again: the same versions, recorded once.
    expect(await poll(client)).toEqual({ unchanged: 6 })
    expect(await count(db, 'commcare_skipped_cases')).toBe(5)
    expect(await count(db, 'index_cases')).toBe(2)
  })

  it('imports a skipped case once a later version passes, and drops its skip row; until then keeps the latest reason', async () => {
    const s = await startSandbox()
    const { client } = casesync(s)
    const c = s.createCase(ALBANY, { case_type: 'patient', case_name: 'unnamed' })
    expect(await poll(client)).toEqual({ skipped: 1 })
    const named = s.edit(ALBANY, c.case_id, { first_name: 'Later', last_name: 'Named', stub: 'yes' })
    expect(await poll(client)).toEqual({ skipped: 1 })
    const [row1] = await skipped()
    expect(row1).toMatchObject({ case_id: c.case_id, reason: 'stub' })
    expect(new Date(row1.modified_at).toISOString().slice(0, 23)).toBe(named.server_date_modified.slice(0, 23))
    s.edit(ALBANY, c.case_id, { stub: '' })
    expect(await poll(client)).toEqual({ new_person: 1 })
    expect(await count(db, 'commcare_skipped_cases')).toBe(0)
    expect(await db.query('SELECT first_name, last_name FROM people')).toEqual([{ first_name: 'Later', last_name: 'Named' }])
  })

  it('updates a case Herald knows whatever the skip rules say of it', async () => {
    const { s, cs, c } = await syncedPerson(db, dir, 'P1')
    s.edit(ALBANY, c.case_id, { stub: 'yes', final_disposition: 'duplicate', transfer_status: 'sent' })
    expect(await poll(cs.client)).toEqual({ updated: 1 })
    expect((await caseOf(db)).data).toMatchObject({ stub: 'yes', final_disposition: 'duplicate', transfer_status: 'sent' })
    expect(await count(db, 'commcare_skipped_cases')).toBe(0)
  })

  it('never lets a blank value in CommCare replace a local one, nor makes blank people fields', async () => {
    const { s, cs, c } = await syncedPerson(db, dir, 'P2')
    s.edit(ALBANY, c.case_id, { first_name: '', last_name: '   ', case_notes: 'called' })
    expect(await poll(cs.client)).toEqual({ updated: 1 })
    const after = await caseOf(db)
    expect(after.data).toMatchObject({ first_name: 'TESTFIRST', last_name: c.data.last_name, case_notes: 'called' })
    const { detail } = (await events(db, c.id)).at(-1)!
    expect(detail.fields).toContain('case_notes')
    expect(detail.fields).not.toEqual(expect.arrayContaining(['first_name']))
    expect(detail.fields).not.toEqual(expect.arrayContaining(['last_name']))
    // A new person from a case with blank fields has none (null), not "" or spaces.
    const fresh = s.createCase(ALLEGANY, patient({ first_name: 'Solo', middle_name: ' ', address_city: '', gender: '  ' }))
    expect(await poll(cs.client, ALLEGANY)).toEqual({ new_person: 1 })
    const [p] = await db.query(`SELECT first_name, middle_name, city, sex FROM people p JOIN index_cases c ON c.person_id = p.id WHERE c.case_id = $1`, [fresh.case_id])
    expect(p).toEqual({ first_name: 'Solo', middle_name: null, city: null, sex: null })
    const [data] = await db.query('SELECT data FROM index_cases WHERE case_id = $1', [fresh.case_id])
    expect(Object.keys(data.data)).not.toContain('middle_name')
  })
})

describe('pushed cases', () => {
  it('are judged by the same rules: the forwarder skips a stub, then imports its next version', async () => {
    const s = await startSandbox()
    const cs = casesync(s, { HERALD_COMMCARE_FORWARDER_USER: 'fwd', HERALD_COMMCARE_FORWARDER_PASSWORD: 'secret' })
    const app = Fastify()
    forwarderRoutes({ db, client: cs.client, commcare: cs.config.commcare, log: cs.log })(app)
    const push = (c: object) => app.inject({ method: 'POST', url: '/commcare/cases',
      headers: { authorization: `Basic ${Buffer.from('fwd:secret').toString('base64')}` }, payload: c })
    const c = s.createCase(ALBANY, patient({ stub: 'yes' }))
    expect((await push(c)).json()).toEqual({ outcomes: ['skipped'] })
    expect(await skippedByReason(db)).toEqual([{ domain: ALBANY, reason: 'stub', count: 1 }])
    expect((await push(s.edit(ALBANY, c.case_id, { stub: 'no' }))).json()).toEqual({ outcomes: ['new_person'] })
    expect(await skippedByReason(db)).toEqual([])
  })
})

describe('pulled cases: external ids', () => {
  it('makes six cases of one person with one numeric external id, in two domains, one person', async () => {
    const s = await startSandbox()
    const { client } = casesync(s)
    // Names spelt differently and no date of birth: only the MPI id says they are one person.
    for (const [domain, first] of [[ALBANY, 'Ann'], [ALBANY, 'Anne'], [ALBANY, 'A'], [ALLEGANY, 'Ann'], [ALLEGANY, 'Annie'], [ALLEGANY, 'Anna']]) {
      s.createCase(domain, { case_type: 'patient', case_name: first, first_name: first, last_name: 'Mpi', external_id: '5465462' })
    }
    expect(await poll(client)).toEqual({ new_person: 1, new_case: 2 })
    expect(await poll(client, ALLEGANY)).toEqual({ new_case: 3 })
    expect(await count(db, 'people')).toBe(1)
    expect(await db.query('SELECT external_id, person_id::text FROM person_external_ids')).toEqual([
      { external_id: '5465462', person_id: (await db.query('SELECT id::text FROM people'))[0].id }])
  })

  it('keeps the external id of a person matched by name and date of birth, and finds them by it', async () => {
    const s = await startSandbox()
    const { client } = casesync(s)
    await linkRows(db, dir, [row(3, { PIDPATIENTKEY: 'P3', PIDCOUNTYCODE: '1', PIDLASTNAME: 'Keyed', PIDFIRSTNAME: 'Kim', PIDDATEOFBIRTH: '05MAY1985:00:00:00.000000' })])
    const [p] = await db.query('SELECT id::text, external_id FROM people')
    s.createCase(ALLEGANY, { case_type: 'patient', case_name: 'K', first_name: 'Kim', last_name: 'Keyed', dob: '1985-05-05', external_id: '7777' })
    expect(await poll(client, ALLEGANY)).toEqual({ new_case: 1 })
    // A later case with that id alone (another spelling, no date of birth) is the same person; so is one with Herald's uuid.
    s.createCase(ALLEGANY, { case_type: 'patient', case_name: 'K', first_name: 'Kimberly', last_name: 'Keyed-Smith', external_id: '7777' })
    s.createCase(ALLEGANY, { case_type: 'patient', case_name: 'K', first_name: 'K', last_name: 'K', external_id: p.external_id.toUpperCase() })
    expect(await poll(client, ALLEGANY)).toEqual({ new_case: 2, unchanged: 1 })
    expect(await count(db, 'people')).toBe(1)
    expect(await db.query('SELECT external_id, person_id::text FROM person_external_ids ORDER BY external_id')).toEqual([{ external_id: '7777', person_id: p.id }])
  })

  it.runIf(onPostgres)('makes one person when cases with one external id are imported at once (PostgreSQL)', async () => {
    const s = await startSandbox()
    const { client } = casesync(s)
    const cases = Array.from({ length: 6 }, (_, i) =>
      s.createCase(ALBANY, { case_type: 'patient', case_name: 'C', first_name: `Con${i}`, last_name: 'Current', external_id: '909090' }))
    const counties = await readCounties(db)
    const outcomes = await Promise.all(cases.map((c) => importCase(db, client, { ...c, child_cases: {} }, ALBANY, counties)))
    expect(outcomes.filter((o) => o === 'new_person')).toHaveLength(1)
    expect(await count(db, 'people')).toBe(1)
    expect(await count(db, 'index_cases')).toBe(6)
  })
})

describe('pulled cases: the first poll of a domain', () => {
  it('starts at HERALD_COMMCARE_PULL_SINCE, not at the domain\'s whole history', async () => {
    const s = await startSandbox()
    const cs = casesync(s, { HERALD_COMMCARE_PULL_SINCE: '2024-06-01' })
    const old = s.createCase(ALBANY, patient({ last_name: 'Before' }), [], { modifiedAt: '2024-05-31T23:59:59.999999Z' })
    s.createCase(ALBANY, patient({ last_name: 'After' }), [], { modifiedAt: '2024-06-01T00:00:00.000001Z' })
    s.createCase(ALBANY, patient({ last_name: 'Now' }))
    expect(await cs.in.step(db, new AbortController().signal)).toEqual({ new_person: 2 })
    expect((await db.query('SELECT last_name FROM people ORDER BY last_name')).map((p) => p.last_name)).toEqual(['After', 'Now'])
    // Later polls start from the cursor: the old case comes when an investigator changes it.
    expect(await poll(cs.client)).toEqual({ unchanged: 1 })
    s.edit(ALBANY, old.case_id, { case_notes: 'reopened' })
    expect(await poll(cs.client)).toEqual({ new_person: 1, unchanged: 1 })
  })

  it('starts 14 days back when no date is set', async () => {
    const s = await startSandbox()
    const cs = casesync(s)
    s.createCase(ALBANY, patient({ last_name: 'Older' }), [], { modifiedAt: new Date(Date.now() - 15 * DAY).toISOString() })
    s.createCase(ALBANY, patient({ last_name: 'Recent' }), [], { modifiedAt: new Date(Date.now() - 13 * DAY).toISOString() })
    expect(await cs.in.step(db, new AbortController().signal)).toEqual({ new_person: 1 })
    expect(await db.query('SELECT last_name FROM people')).toEqual([{ last_name: 'Recent' }])
  })
})

describe('a county list served as a bare array', () => {
  it('is loaded from CommCare, and the sandbox finds transfer destinations in it', async () => {
    const bare = JSON.parse(readFileSync(COUNTY_LIST, 'utf8')).objects
    const s = await startSandbox({ countyList: bare })
    const { client } = casesync(s)
    expect(await client.countyList()).toEqual(bare)
    await db.query('DELETE FROM counties')
    expect(await fetchCounties(db, client)).toBe(65)
    const counties = await readCounties(db)
    expect(counties.byFips.get(7)).toMatchObject({ domain: 'ny-broome-cdcms', participating: true })
    expect(counties.state?.domain).toBe('ny-statewide-cdcms')
    const c = s.createCase(ALBANY, patient())
    expect(s.transfer(ALBANY, c.case_id, 7)?.domain).toBe('ny-broome-cdcms')
  })
})

describe('failed polls', () => {
  it('are counted as poll_failed by the engine', async () => {
    const s = await startSandbox({ failureRate: 1 })
    const cs = casesync(s)
    const domains = await count(db, 'counties', 'participating AND domain IS NOT NULL')
    expect(await cs.in.step(db, new AbortController().signal)).toEqual({ poll_failed: domains })
  })

  it('make `herald run --until-idle` exit 1 with a line naming the engine; a clean run exits 0', { timeout: 120_000 }, async () => {
    const tmp = tempDir()
    const t = onPostgres ? await createTestDb() : undefined
    try {
      const s = await startSandbox()
      const BIN = new URL('../../bin/herald.js', import.meta.url).pathname
      const env = { ...process.env, HERALD_LOG_LEVEL: 'silent', HERALD_COMMCARE_URL: s.url, HERALD_COMMCARE_USER: 'herald',
        HERALD_COMMCARE_API_KEY: 'sandbox', HERALD_COMMCARE_ROOT_DOMAIN: 'ny-covid', HERALD_INBOX: join(tmp.dir, 'inbox'),
        HERALD_DATA_DIR: join(tmp.dir, '.herald'), DATABASE_URL: t?.url ?? '', HERALD_COMMCARE_POLL_SECONDS: '1' }
      const herald = (...args: string[]) => promisify(execFile)(process.execPath, [BIN, ...args], { env })
        .then(() => ({ code: 0, stderr: '' }), (e) => ({ code: e.code as number, stderr: e.stderr as string }))
      if (t) await loadCounties(t.db)
      else expect((await herald('counties', 'load', COUNTY_LIST)).code).toBe(0)
      s.createCase(ALBANY, patient())
      expect(await herald('run', '--until-idle', '--engines', 'casesync-in')).toEqual({ code: 0, stderr: '' })
      // Every request fails now (the county list's too: the one loaded stays), once each domain is due again.
      s.knobs.failureRate = 1
      await new Promise((r) => setTimeout(r, 1100))
      const failed = await herald('run', '--until-idle', '--engines', 'casesync-in')
      expect(failed.code).toBe(1)
      expect(failed.stderr.trim().split('\n')).toEqual([expect.stringMatching(/^herald: error: .*casesync-in \(\d+ failed\)/)])
    } finally {
      await t?.drop()
      tmp.cleanup()
    }
  })
})
