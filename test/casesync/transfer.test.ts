/**
 * Outbound resolution as New York's project spaces need it: a transfer's destination found by
 * CommCare's search, else among Herald's own cases, else a visible unresolved_transfer an operator
 * answers (`herald cases resolve`); self-transfers; a case CommCare no longer has; moved_to; and
 * `herald cases` saying why jobs retry.
 */
import { describe, expect, it } from 'vitest'
import { outboundQueue } from '../../src/casesync/queue.ts'
import { outboundSummary, resolveCase } from '../../src/cli/casesync.ts'
import type { Db } from '../../src/db/types.ts'
import { events as queueEvents, failedRows } from '../../src/engine/queue.ts'
import { casesync, caseOf, syncedPerson, events, labResults, linkRows, patients, startSandbox, syncAll } from '../helpers/casesync.ts'
import { row } from '../helpers/files.ts'
import { count, freshDbEachTest } from '../helpers/link.ts'

const ALBANY = 'ny-albany-cdcms' // FIPS 1
const ALLEGANY = 'ny-allegany-cdcms' // FIPS 3
const BRONX = 5 // a county with no CommCare domain
let db: Db
let dir: string
freshDbEachTest((d, x) => {
  db = d
  dir = x
})


/** A later result for the same person: the case's job is due again. */
const laterResult = (key: string, n = 2) => linkRows(db, dir, [row(3, { PIDPATIENTKEY: key, PIDCOUNTYCODE: '1', OBRACCESSIONNUM: `${key}-A${n}` })])

/** A CommCare case as a pull leaves it in Herald: an index case of the person, with CommCare's properties. */
async function pulled(personId: string, fips: number, cc: { case_id: string; properties: Record<string, string | null>; server_date_modified: string }) {
  const data = Object.fromEntries(Object.entries(cc.properties).filter(([, v]) => v !== null))
  const [r] = await db.query(
    `INSERT INTO index_cases (person_id, county_fips, case_id, data, opened_on, commcare_modified_at)
     VALUES ($1, $2, $3, $4, current_date, $5) RETURNING id::text`, [personId, fips, cc.case_id, data, cc.server_date_modified])
  return r.id as string
}

const movedTo = async (id: string) => (await db.query('SELECT moved_to::text FROM index_cases WHERE id = $1', [id]))[0].moved_to
const job = async (id: string) => (await db.query('SELECT attempts, failed_at IS NOT NULL AS failed, last_error FROM case_sync_queue WHERE index_case_id = $1', [id]))[0]

describe('a transfer whose destination is not found', () => {
  it('is an unresolved_transfer, failed for an operator, with nothing posted to the county the person left', async () => {
    const { s, cs, c } = await syncedPerson(db, dir, 'T1')
    // A copy made by hand: found by external_id, but not naming this case as its source.
    s.transfer(ALBANY, c.case_id, 3, { linkSource: false })
    await laterResult('T1')
    const before = s.stats.submissions
    expect(await syncAll(db, cs.out)).toEqual({ unresolved_transfer: 1 })
    expect(s.stats.submissions).toBe(before)
    expect(labResults(s, ALBANY)).toHaveLength(1)
    expect(await job(c.id)).toMatchObject({ failed: true, last_error: expect.stringContaining(`herald cases resolve ${c.id} --to CASE_ID`) })
    expect((await job(c.id)).last_error).toMatch(/transferred to county 3 \(ny-allegany-cdcms\): none from this transfer/)
    expect((await events(db, c.id)).slice(-2)).toEqual([
      { kind: 'failed', detail: expect.objectContaining({ reason: 'unresolved_transfer' }) },
      { kind: 'unresolved_transfer', detail: { chain: [`${ALBANY}/${c.case_id}`], why: 'none from this transfer', to_county: '3', to_domain: ALLEGANY, search_results: 1 } },
    ])
    // `herald queue failed casesync-out` and `herald cases` list it.
    expect((await failedRows(db, outboundQueue)).map((r) => r.id)).toEqual([c.id])
    expect((await queueEvents(db, outboundQueue, [c.id])).at(-1)!.kind).toBe('unresolved_transfer')
    expect((await outboundSummary(db)).lines[0]).toBe('outbound: 0 waiting, 0 retrying, 0 in flight, 1 failed (1 unresolved transfer: herald cases resolve); herald cases --failed lists them')
  })

  it('says why: no search result, a county without a domain, no external_id', async () => {
    const { s, cs, c } = await syncedPerson(db, dir, 'T2')
    s.transfer(ALBANY, c.case_id, 3, { createDestination: false })
    await laterResult('T2')
    expect(await syncAll(db, cs.out)).toEqual({ unresolved_transfer: 1 })
    expect((await events(db, c.id)).at(-1)!.detail).toMatchObject({ why: 'no search result', search_results: 0 })

    s.edit(ALBANY, c.case_id, { transfer_destination_county_id: String(BRONX) })
    await laterResult('T2', 3)
    expect(await syncAll(db, cs.out)).toEqual({ unresolved_transfer: 1 })
    expect((await events(db, c.id)).at(-1)!.detail).toMatchObject({ why: 'county without a domain', to_county: '5', to_domain: null })
    expect((await job(c.id)).last_error).toContain('--to CASE_ID --domain DOMAIN')

    s.edit(ALBANY, c.case_id, { transfer_destination_county_id: '3', external_id: '' })
    await laterResult('T2', 4)
    expect(await syncAll(db, cs.out)).toEqual({ unresolved_transfer: 1 })
    expect((await events(db, c.id)).at(-1)!.detail).toMatchObject({ why: 'no external_id' })
    expect(labResults(s, ALBANY)).toHaveLength(1)
  })

  it("is found among Herald's own cases when CommCare's search misses it, and followed along its duplicates", async () => {
    const { s, cs, c } = await syncedPerson(db, dir, 'T3')
    const dest = s.transfer(ALBANY, c.case_id, 3)!
    // The copy's external_id was changed in Allegany: the search by the origin's finds nothing. Herald pulled the copy.
    s.edit(ALLEGANY, dest.case_id, { external_id: 'changed-in-allegany' })
    const [{ person_id }] = await db.query('SELECT person_id::text FROM index_cases WHERE id = $1', [c.id])
    await pulled(person_id, 3, s.getCase(ALLEGANY, dest.case_id)!)
    const end = s.createCase(ALLEGANY, { case_name: 'kept' })
    s.markDuplicate(ALLEGANY, dest.case_id, end.case_id)
    await laterResult('T3')
    expect(await syncAll(db, cs.out)).toEqual({ redirected: 1 })
    expect(labResults(s, ALLEGANY).map((r) => [r.properties.accession_number, r.indices.parent.case_id]).sort())
      .toEqual([['T3-A1', end.case_id], ['T3-A2', end.case_id]])
    expect(labResults(s, ALBANY)).toHaveLength(1)
    expect((await events(db, c.id)).at(-1)).toMatchObject({
      kind: 'redirected', detail: { to_case: end.case_id, chain: [`${ALBANY}/${c.case_id}`, `${ALLEGANY}/${dest.case_id}`, `${ALLEGANY}/${end.case_id}`] },
    })
    expect(await movedTo(c.id)).toBe((await caseOf(db, `case_id = '${end.case_id}'`)).id)
  })
})

describe('herald cases resolve', () => {
  it('points an unresolved transfer at the case the operator names: the job posts there, and later ones too', async () => {
    const { s, cs, c } = await syncedPerson(db, dir, 'R1')
    const copy = s.transfer(ALBANY, c.case_id, 3, { linkSource: false })!
    await laterResult('R1')
    expect(await syncAll(db, cs.out)).toEqual({ unresolved_transfer: 1 })
    // No --domain: the transfer's destination domain, from the event.
    expect(await resolveCase(db, c.id, { to: copy.case_id })).toBe(`case ${c.id} will be posted to case ${copy.case_id} in ${ALLEGANY} by the next case sync round`)
    expect(await db.query('SELECT resolved_to_case_id, resolved_to_domain FROM index_cases WHERE id = $1', [c.id]))
      .toEqual([{ resolved_to_case_id: copy.case_id, resolved_to_domain: ALLEGANY }])
    expect(await job(c.id)).toEqual({ attempts: 0, failed: false, last_error: null })
    expect((await events(db, c.id)).slice(-2).map((e) => e.kind)).toEqual(['transfer_resolved', 'retry_requested'])
    expect(await syncAll(db, cs.out)).toEqual({ redirected: 1 })
    expect(labResults(s, ALLEGANY).map((r) => [r.properties.accession_number, r.indices.parent.case_id]).sort())
      .toEqual([['R1-A1', copy.case_id], ['R1-A2', copy.case_id]])
    expect(labResults(s, ALBANY)).toHaveLength(1)
    const local = await caseOf(db, `case_id = '${copy.case_id}'`)
    expect(await movedTo(c.id)).toBe(local.id)
    // A later job for the origin starts at the named case again: it never posts to the origin.
    await db.query('INSERT INTO case_sync_queue (index_case_id) VALUES ($1)', [c.id])
    expect(await syncAll(db, cs.out)).toEqual({ redirected: 1 })
    expect(labResults(s, ALBANY)).toHaveLength(1)
    expect(await count(db, 'case_sync_queue')).toBe(0)
  })

  it('refuses a case that does not exist or is not waiting, a blank case id, --recreate for a transfer, an unknown domain', async () => {
    const { s, cs, c } = await syncedPerson(db, dir, 'R2')
    await expect(resolveCase(db, '999999', { to: 'x' })).rejects.toThrow(/no case 999999/)
    await expect(resolveCase(db, 'abc', { to: 'x' })).rejects.toThrow(/CASE must be a case id/)
    await expect(resolveCase(db, c.id, { to: 'x' })).rejects.toThrow(`case ${c.id} is not waiting on an unresolved transfer or a case missing in CommCare`)
    s.transfer(ALBANY, c.case_id, 3, { createDestination: false })
    await laterResult('R2')
    expect(await syncAll(db, cs.out)).toEqual({ unresolved_transfer: 1 })
    await expect(resolveCase(db, c.id, { to: '  ' })).rejects.toThrow('--to needs a CommCare case id')
    await expect(resolveCase(db, c.id, {})).rejects.toThrow('give either --to CASE_ID or --recreate')
    await expect(resolveCase(db, c.id, { recreate: true })).rejects.toThrow(/waits on an unresolved transfer, not a missing case/)
    await expect(resolveCase(db, c.id, { to: 'y', domain: 'ny-nowhere' })).rejects.toThrow(/--domain ny-nowhere is no county's CommCare domain/)
    await expect(resolveCase(db, c.id, { to: c.case_id })).rejects.toThrow(/own CommCare case/)
    expect(await job(c.id)).toMatchObject({ failed: true })
  })
})

describe('a case CommCare no longer has', () => {
  it('fails visibly as missing_in_commcare instead of being created again in silence; --recreate creates it', async () => {
    const { s, cs, c } = await syncedPerson(db, dir, 'M1')
    s.deleteCase(ALBANY, c.case_id)
    await laterResult('M1')
    expect(await syncAll(db, cs.out)).toEqual({ missing_in_commcare: 1 })
    expect(patients(s)).toHaveLength(0)
    expect((await job(c.id)).last_error).toBe(`CommCare no longer has case ${c.case_id} in domain ${ALBANY}: ` +
      `\`herald cases resolve ${c.id} --to CASE_ID\` names the case that replaced it, or \`herald cases resolve ${c.id} --recreate\` posts it again as a new case`)
    expect((await events(db, c.id)).at(-1)).toEqual({ kind: 'missing_in_commcare', detail: { domain: ALBANY, case_id: c.case_id } })
    expect((await outboundSummary(db)).lines[0]).toContain('(1 missing in CommCare: herald cases resolve)')

    expect(await resolveCase(db, c.id, { recreate: true })).toBe(`case ${c.id} will be created again in ${ALBANY} by the next case sync round`)
    expect((await events(db, c.id)).slice(-2).map((e) => e.kind)).toEqual(['recreated', 'retry_requested'])
    expect(await syncAll(db, cs.out)).toEqual({ posted: 1 })
    expect(patients(s).map((p) => p.case_id)).toEqual([c.case_id])
    expect(labResults(s).map((r) => r.properties.accession_number).sort()).toEqual(['M1-A1', 'M1-A2'])
    expect((await events(db, c.id)).at(-1)).toMatchObject({ kind: 'posted', detail: { created: true } })
  })

  it('can be pointed at the case that replaced it', async () => {
    const { s, cs, c } = await syncedPerson(db, dir, 'M2')
    s.deleteCase(ALBANY, c.case_id)
    const other = s.createCase(ALBANY, { case_name: 'reopened' })
    await laterResult('M2')
    expect(await syncAll(db, cs.out)).toEqual({ missing_in_commcare: 1 })
    expect(await resolveCase(db, c.id, { to: other.case_id })).toContain(`posted to case ${other.case_id} in ${ALBANY}`)
    expect(await syncAll(db, cs.out)).toEqual({ redirected: 1 })
    expect(labResults(s).map((r) => r.indices.parent.case_id)).toEqual([other.case_id, other.case_id])
  })
})

describe('resolution', () => {
  it('takes a case named its own county as no transfer: no search, no dead end, posted to it', async () => {
    const { s, cs, c } = await syncedPerson(db, dir, 'S1')
    expect(s.transfer(ALBANY, c.case_id, 1)!.case_id).toBe(c.case_id)
    expect(patients(s)).toHaveLength(1)
    let searches = 0
    const find = cs.client.findByExternalId.bind(cs.client)
    cs.client.findByExternalId = async (...args) => (searches++, find(...args))
    await laterResult('S1')
    expect(await syncAll(db, cs.out)).toEqual({ posted: 1 })
    expect(searches).toBe(0)
    expect(labResults(s, ALBANY)).toHaveLength(2)
    const posted = (await events(db, c.id)).at(-1)!
    expect(posted.kind).toBe('posted')
    expect(posted.detail).not.toHaveProperty('dead_end')
  })

  it('adopts a duplicate whose CommCare answer has no closed field, and posts to it', async () => {
    const { s, cs, c } = await syncedPerson(db, dir, 'D1')
    const b = s.createCase(ALBANY, { case_name: 'B', external_id: c.data.external_id })
    s.omitClosed(ALBANY, b.case_id)
    s.markDuplicate(ALBANY, c.case_id, b.case_id)
    await laterResult('D1')
    expect(await syncAll(db, cs.out)).toEqual({ redirected: 1 })
    expect(labResults(s).filter((r) => r.indices.parent.case_id === b.case_id)).toHaveLength(2)
    expect(await db.query('SELECT closed FROM index_cases WHERE case_id = $1', [b.case_id])).toEqual([{ closed: false }])
  })

  it("sets moved_to to the end of the chain, and moves the cases that had moved to the origin along", async () => {
    const { s, cs, c } = await syncedPerson(db, dir, 'V1')
    const b = s.createCase(ALBANY, { case_name: 'B', external_id: c.data.external_id })
    s.markDuplicate(ALBANY, c.case_id, b.case_id)
    await laterResult('V1')
    expect(await syncAll(db, cs.out)).toEqual({ redirected: 1 })
    const localB = (await caseOf(db, `case_id = '${b.case_id}'`)).id
    expect(await movedTo(c.id)).toBe(localB)
    // Later B is transferred: B's own job goes on to its copy, and the first case follows.
    const copy = s.transfer(ALBANY, b.case_id, 3)!
    await db.query('INSERT INTO case_sync_queue (index_case_id) VALUES ($1)', [localB])
    expect(await syncAll(db, cs.out)).toEqual({ redirected: 1 })
    const localCopy = (await caseOf(db, `case_id = '${copy.case_id}'`)).id
    expect(await movedTo(localB)).toBe(localCopy)
    expect(await movedTo(c.id)).toBe(localCopy)
    expect(await movedTo(localCopy)).toBeNull()
  })
})

describe('herald cases', () => {
  it('says why jobs are retrying, by kind of error, without case ids or CommCare messages', async () => {
    const { s, cs } = await syncedPerson(db, dir, 'H1')
    await laterResult('H1') // a known case: a GET first
    await linkRows(db, dir, [row(3, { PIDPATIENTKEY: 'H2', PIDCOUNTYCODE: '1' })]) // a new case: the form at once
    s.knobs.failureRate = 1
    expect(await syncAll(db, cs.out)).toEqual({ retrying: 2 })
    const out = await outboundSummary(db)
    expect(out.lines).toEqual([
      'outbound: 0 waiting, 2 retrying, 0 in flight, 0 failed',
      `  2 retrying: 1 × CommCare GET /a/${ALBANY}/api/v0.5/case: HTTP 500; 1 × CommCare POST /a/${ALBANY}/receiver: HTTP 500`,
    ])
  })
})

describe('the CommCare sandbox', () => {
  it('plays the shapes above through its admin routes: a copy without its source, a self-transfer, no closed, a deleted case', async () => {
    const s = await startSandbox()
    const admin = async (method: string, path: string, body?: object) =>
      (await fetch(s.url + path, { method, headers: body ? { 'content-type': 'application/json' } : {}, body: body && JSON.stringify(body) })).json()
    const get = async (domain: string, id: string) =>
      fetch(`${s.url}/a/${domain}/api/v0.5/case/${id}/?format=json`, { headers: { authorization: 'ApiKey herald:sandbox' } })
    const a = await admin('POST', `/sandbox/${ALBANY}/cases`, { properties: { case_name: 'A', external_id: 'e1' } })
    const moved = await admin('POST', `/sandbox/${ALBANY}/cases/${a.case_id}/transfer`, { to_fips: 3, link_source: false })
    expect(moved.destination.properties).toMatchObject({ external_id: 'e1' })
    expect(moved.destination.properties).not.toHaveProperty('transfer_source_case_id')
    const b = await admin('POST', `/sandbox/${ALBANY}/cases`, { properties: { case_name: 'B' } })
    const self = await admin('POST', `/sandbox/${ALBANY}/cases/${b.case_id}/transfer`, { to_fips: 1 })
    expect(self.destination).toMatchObject({ case_id: b.case_id, closed: false, properties: { transfer_destination_county_id: '1' } })
    expect(patients(s, ALBANY)).toHaveLength(2)
    await admin('POST', `/sandbox/${ALBANY}/cases/${b.case_id}/shape`, { omit_closed: true })
    expect(await (await get(ALBANY, b.case_id)).json()).not.toHaveProperty('closed')
    expect(await admin('DELETE', `/sandbox/${ALBANY}/cases/${b.case_id}`)).toEqual({ deleted: b.case_id })
    expect((await get(ALBANY, b.case_id)).status).toBe(404)
  })
})
