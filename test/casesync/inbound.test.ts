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
/** Polls a domain now, whatever its last poll. */
async function poll(client: ReturnType<typeof casesync>['client'], domain = ALBANY, pageSize = 100) {
  await db.query('UPDATE commcare_cursors SET polled_at = NULL')
  return pollDomain(db, client, domain, await readCounties(db), 60, pageSize)
}

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
    expect(await db.query('SELECT modified_upto FROM commcare_cursors')).toEqual([{ modified_upto: null }])
    s.knobs.rateLimit = undefined
    expect(await poll(client)).toEqual({ new_person: 149, unchanged: 1 })
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
