/** Inbound case sync: polling from a cursor (paging, overlap), the import rules, and the case forwarder. */
import Fastify from 'fastify'
import { describe, expect, it } from 'vitest'
import { forwarderRoutes } from '../../src/casesync/forwarder.ts'
import { pollDomain } from '../../src/casesync/poll.ts'
import type { Db } from '../../src/db/types.ts'
import { readCounties } from '../../src/link/counties.ts'
import { casesync, caseOf, events, linkRows, startSandbox, syncAll } from '../helpers/casesync.ts'
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

const person = (n: number, extra: Record<string, string> = {}) => ({
  case_type: 'patient', case_name: `PERSON ${n}`, first_name: 'Inbound', last_name: `Person${n}`, dob: '1970-01-02', ...extra,
})
/** Polls a domain now, whatever its schedule says. */
async function poll(client: ReturnType<typeof casesync>['client'], domain = ALBANY, pageSize = 100, signal?: AbortSignal) {
  await db.query('UPDATE commcare_cursors SET retry_at = NULL')
  return pollDomain(db, client, domain, await readCounties(db), { worker: 'test', pollSeconds: 60, pageSize, signal })
}
const cursor = async (domain = ALBANY) =>
  (await db.query(`SELECT modified_upto, claimed_by, claimed_until, attempts, last_error, failed_at,
      extract(epoch FROM retry_at - now())::float8 AS next_in FROM commcare_cursors WHERE domain = $1`, [domain]))[0]

describe('inbound case sync', () => {
  it('pages through every changed case by meta.next, and a second poll overlapping the first imports nothing twice', async () => {
    const s = await startSandbox()
    const { client } = casesync(s)
    for (let i = 0; i < 250; i++) s.createCase(ALBANY, person(i), [{ case_type: 'lab_result', accession_number: `IN-${i}`, lab_result: 'positive' }])
    const before = s.stats.requests
    expect(await poll(client)).toEqual({ new_person: 250 })
    expect(s.stats.requests - before).toBe(3 + 250) // three pages, then each new case with its lab results
    expect(await count(db, 'people')).toBe(250)
    expect(await count(db, 'lab_results', 'positive')).toBe(250)
    const [cursor] = await db.query('SELECT modified_upto FROM commcare_cursors WHERE domain = $1', [ALBANY])
    expect(new Date(cursor.modified_upto).toISOString().slice(0, 23)).toBe(s.cases(ALBANY).at(-1)!.server_date_modified.slice(0, 23))
    expect(await poll(client)).toEqual({ unchanged: 250 }) // all within the overlap
    s.edit(ALBANY, s.cases(ALBANY).find((c) => c.case_type === 'patient')!.case_id, { case_notes: 'reached' })
    expect(await poll(client)).toEqual({ unchanged: 249, updated: 1 })
  })

  it('leaves the cursor where it was when a poll fails part-way', async () => {
    const s = await startSandbox()
    const { client } = casesync(s)
    for (let i = 0; i < 150; i++) s.createCase(ALBANY, person(i))
    s.knobs.rateLimit = { every: 2, burst: 1000, retryAfterSeconds: 1 } // page one, one case, then 429s
    await expect(poll(client)).rejects.toThrow(/429/)
    // Unmoved, given back, and waiting as CommCare asked (a 429 spends no attempt).
    expect(await cursor()).toMatchObject({ modified_upto: null, claimed_by: null, attempts: 0, last_error: expect.stringMatching(/429/) })
    expect((await cursor()).next_in).toBeGreaterThan(0)
    s.knobs.rateLimit = undefined
    expect(await poll(client)).toEqual({ new_person: 149, unchanged: 1 })
  })

  it('keeps each domain\'s cursor as a schedule row: due again a poll interval after a complete poll', async () => {
    const s = await startSandbox()
    const { client } = casesync(s)
    s.createCase(ALBANY, person(1))
    expect(await poll(client)).toEqual({ new_person: 1 })
    const after = await cursor()
    expect(after).toMatchObject({ claimed_by: null, claimed_until: null, attempts: 0, last_error: null })
    expect(after.next_in).toBeGreaterThan(58)
    expect(after.next_in).toBeLessThanOrEqual(60)
    s.createCase(ALBANY, person(2))
    expect(await pollDomain(db, client, ALBANY, await readCounties(db), { worker: 'test', pollSeconds: 60 })).toBeUndefined() // not due
    expect(await pollDomain(db, client, ALBANY, await readCounties(db), { worker: 'other', pollSeconds: 60 })).toBeUndefined()
  })

  it('backs a failed poll off with an attempt spent, and polls no domain another worker holds', async () => {
    const s = await startSandbox({ failureRate: 1 })
    const { client } = casesync(s)
    await expect(poll(client)).rejects.toThrow(/500/)
    const failed = await cursor()
    expect(failed).toMatchObject({ modified_upto: null, claimed_by: null, attempts: 1, failed_at: null, last_error: expect.stringMatching(/500/) })
    expect(failed.next_in).toBeGreaterThan(60 * 0.9 - 2) // the spec's first wait: 60 s ±10%
    expect(await db.query(`SELECT kind FROM queue_events WHERE engine = 'casesync-in' AND item = $1`, [ALBANY])).toEqual([{ kind: 'retrying' }])
    s.knobs.failureRate = 0
    await db.query(`UPDATE commcare_cursors SET retry_at = NULL, claimed_by = 'other', claimed_until = now() + interval '1 minute'`)
    const before = s.stats.requests
    expect(await pollDomain(db, client, ALBANY, await readCounties(db), { worker: 'test', pollSeconds: 60 })).toBeUndefined()
    expect(s.stats.requests).toBe(before)
  })

  it('stops between pages at the stop signal, giving the cursor back unmoved', async () => {
    const s = await startSandbox()
    const { client } = casesync(s)
    for (let i = 0; i < 150; i++) s.createCase(ALBANY, person(i))
    const stop = new AbortController()
    const get = client.changedCases.bind(client)
    client.changedCases = async function* (...args) {
      for await (const page of get(...args)) {
        stop.abort() // while the first page is in hand
        yield page
      }
    }
    expect(await poll(client, ALBANY, 100, stop.signal)).toEqual({ new_person: 100 })
    expect(await cursor()).toMatchObject({ modified_upto: null, claimed_by: null, claimed_until: null, attempts: 0, next_in: null })
    client.changedCases = get
    expect(await poll(client)).toEqual({ new_person: 50, unchanged: 100 })
  })

  it('the engine polls every participating domain that is due, once a round, and stops at the stop signal', async () => {
    const s = await startSandbox()
    const cs = casesync(s)
    s.createCase(ALBANY, person(1))
    s.createCase(ALLEGANY, person(2))
    expect(await cs.in.step(db, new AbortController().signal)).toEqual({ new_person: 2 })
    const domains = (await db.query(`SELECT domain FROM commcare_cursors ORDER BY domain`)).map((r) => r.domain)
    expect(domains).toEqual(expect.arrayContaining([ALBANY, ALLEGANY]))
    expect(await count(db, 'commcare_cursors', 'retry_at > now() AND claimed_by IS NULL')).toBe(domains.length)
    expect(await cs.in.step(db, new AbortController().signal)).toEqual({}) // nothing due
    await db.query('UPDATE commcare_cursors SET retry_at = NULL')
    const stop = new AbortController()
    stop.abort()
    const before = s.stats.requests
    expect(await cs.in.step(db, stop.signal)).toEqual({})
    expect(s.stats.requests).toBe(before)
    expect(await count(db, 'commcare_cursors', 'claimed_by IS NULL AND retry_at IS NULL')).toBe(domains.length)
  })

  it('polls HERALD_COMMCARE_POLL_CONCURRENCY domains at once, each once a round', async () => {
    const s = await startSandbox({ latencyMs: 150 })
    for (const [setting, most] of [['1', 1], ['4', 4]] as const) {
      await db.query('UPDATE commcare_cursors SET retry_at = NULL')
      s.stats.maxInFlight = 0
      const cs = casesync(s, { HERALD_COMMCARE_POLL_CONCURRENCY: setting })
      const before = s.stats.requests
      await cs.in.step(db, new AbortController().signal)
      const domains = await count(db, 'commcare_cursors')
      expect(domains).toBeGreaterThan(4)
      expect(s.stats.requests - before).toBe(domains) // one page each, every domain once
      expect(s.stats.maxInFlight).toBe(most)
    }
  })

  it('updates a known case with what investigators wrote, without importing its new lab results', async () => {
    const s = await startSandbox()
    const cs = casesync(s)
    await linkRows(db, dir, [row(3, { PIDPATIENTKEY: 'I1', PIDCOUNTYCODE: '1', OBRACCESSIONNUM: 'I1-A1' })])
    await syncAll(db, cs.out)
    const c = await caseOf(db)
    s.edit(ALBANY, c.case_id, { final_disposition: 'not_a_case', case_notes: 'spoke to them' }, { closed: true })
    s.createCase(ALBANY, { case_type: 'lab_result', accession_number: 'BY-HAND' }) // unrelated to Herald's rule 1
    await poll(cs.client)
    const [after] = await db.query('SELECT closed, data, activity_ended_on FROM index_cases WHERE id = $1', [c.id])
    expect(after.closed).toBe(true)
    expect(after.data).toMatchObject({ final_disposition: 'not_a_case', case_notes: 'spoke to them', first_name: 'TESTFIRST' })
    expect(await count(db, 'lab_results')).toBe(1)
    expect((await events(db, c.id)).at(-1)).toMatchObject({ kind: 'pulled_update', detail: { fields: expect.arrayContaining(['final_disposition', 'case_notes']) } })
    expect(await count(db, 'case_sync_queue')).toBe(0) // a pulled change is not posted back
  })

  it('gives a person matched by date of birth and name a new case, and creates the rest', async () => {
    const s = await startSandbox()
    const { client } = casesync(s)
    await linkRows(db, dir, [row(3, { PIDPATIENTKEY: 'I2', PIDCOUNTYCODE: '1', PIDLASTNAME: 'Matcher', PIDFIRSTNAME: 'Ann Marie', PIDDATEOFBIRTH: '05MAY1985:00:00:00.000000' })])
    const [p] = await db.query('SELECT id::text FROM people')
    s.createCase(ALLEGANY, { case_type: 'patient', case_name: 'X', first_name: 'ann', last_name: 'MATCHER', dob: '1985-05-05' },
      [{ case_type: 'lab_result', accession_number: 'HAND-1', lab_result: 'positive', specimen_collection_date: '2026-11-01' }])
    s.createCase(ALLEGANY, { case_type: 'patient', case_name: 'Y', first_name: 'New', last_name: 'Stranger', dob: '1990-01-01', contact_phone_number: '+1 (555) 010-0142' })
    s.createCase(ALLEGANY, { case_type: 'contact', case_name: 'a contact' })
    expect(await poll(client, ALLEGANY)).toEqual({ new_case: 1, new_person: 1 })
    const cases = await db.query(`SELECT c.person_id::text, c.county_fips, c.commcare_modified_at IS NOT NULL AS known,
        (SELECT array_agg(accession_number || ':' || positive || ':' || tested_on) FROM lab_results r WHERE r.index_case_id = c.id) AS results
      FROM index_cases c WHERE county_fips = 3 ORDER BY c.id`)
    expect(cases[0]).toEqual({ person_id: p.id, county_fips: 3, known: true, results: ['HAND-1:true:2026-11-01'] })
    expect(cases[1].person_id).not.toBe(p.id)
    expect(await db.query(`SELECT last_name, date_of_birth::text, match_last, match_first, phone FROM people WHERE id = $1`, [cases[1].person_id]))
      .toEqual([{ last_name: 'Stranger', date_of_birth: '1990-01-01', match_last: 'STRANGER', match_first: 'NEW', phone: '5550100142' }])
    expect(await count(db, 'case_sync_queue', 'index_case_id IN (SELECT id FROM index_cases WHERE county_fips = 3)')).toBe(0)
  })

  describe('the case forwarder', () => {
    async function app(forwarder = 'fwd:secret') {
      const s = await startSandbox()
      const cs = casesync(s, { HERALD_COMMCARE_FORWARDER_USER: forwarder.split(':')[0], HERALD_COMMCARE_FORWARDER_PASSWORD: forwarder.split(':')[1] })
      const a = Fastify()
      forwarderRoutes({ db, client: cs.client, commcare: cs.config.commcare, log: cs.log })(a)
      return { s, a }
    }
    const basic = (user: string, password: string) => `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`
    const caseJson = (s: Awaited<ReturnType<typeof app>>['s'], id: string) => {
      const c = s.getCase(ALBANY, id)!
      return { ...c, properties: { ...c.properties } }
    }

    it('refuses a push without the right credentials', async () => {
      const { s, a } = await app()
      const c = s.createCase(ALBANY, person(1))
      for (const authorization of [undefined, basic('fwd', 'wrong'), basic('other', 'secret')]) {
        const res = await a.inject({ method: 'POST', url: '/commcare/cases', headers: authorization ? { authorization } : {}, payload: caseJson(s, c.case_id) })
        expect(res.statusCode).toBe(401)
      }
      expect(await count(db, 'index_cases')).toBe(0)
    })

    it('imports a pushed patient case, and ignores other case types and its own submissions', async () => {
      const { s, a } = await app()
      const headers = { authorization: basic('fwd', 'secret') }
      const c = s.createCase(ALBANY, person(2), [{ case_type: 'lab_result', accession_number: 'FWD-1' }])
      const lab = s.cases(ALBANY).find((x) => x.case_type === 'lab_result')!
      const push = (payload: object) => a.inject({ method: 'POST', url: '/commcare/cases', headers, payload })
      expect((await push(caseJson(s, c.case_id))).json()).toEqual({ outcomes: ['new_person'] })
      expect((await push(caseJson(s, c.case_id))).json()).toEqual({ outcomes: ['unchanged'] })
      expect((await push({ ...lab, domain: ALBANY })).json()).toEqual({ outcomes: ['ignored'] })
      const edited = s.edit(ALBANY, c.case_id, { case_notes: 'by herald?' })
      expect((await push({ ...edited, user_id: 'herald' })).json()).toEqual({ outcomes: ['own'] })
      expect((await push(caseJson(s, c.case_id))).json()).toEqual({ outcomes: ['updated'] })
      expect((await push({ nonsense: true })).statusCode).toBe(400)
      expect(await count(db, 'lab_results')).toBe(1)
    })
  })
})
