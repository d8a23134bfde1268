/**
 * Cases that moved: case sync sets index_cases.moved_to when it redirects a case to, or adopts, the
 * case at the end of its transfer or duplicate chain. Link then sends the person's later results
 * there, and the origin takes none: one result is never on two cases, nor posted by two jobs.
 */
import { describe, expect, it } from 'vitest'
import type { Db } from '../../src/db/types.ts'
import { exportText, row, writeExport } from '../helpers/files.ts'
import { ingestPath } from '../helpers/ingest.ts'
import { count, freshDbEachTest, linkAll } from '../helpers/link.ts'

let db: Db
let dir: string
freshDbEachTest((d, x) => {
  db = d
  dir = x
})

let fileNo = 0
async function linkRows(rows: string[][]) {
  await ingestPath(db, writeExport(dir, `moved-${++fileNo}.txt`, exportText(3, rows)))
  return linkAll(db)
}
const person = (key: string, values: Record<string, string> = {}) =>
  row(3, { PIDPATIENTKEY: key, PIDLASTNAME: `MOVED${key}`, PIDCOUNTYCODE: '1', ...values })

let caseNo = 0
/**
 * What case sync does when it adopts the end of a chain (outbound.ts): a case of the same person in
 * `fips`, the origin's lab results copied to it, and the origin's moved_to naming it; then posted.
 */
async function moveCase(originId: number, fips: number): Promise<number> {
  const [dest] = await db.query(
    `INSERT INTO index_cases (person_id, county_fips, case_id, data, opened_on)
     SELECT person_id, $2, $3, data, opened_on FROM index_cases WHERE id = $1 RETURNING id`,
    [originId, fips, `00000000-0000-4000-8000-${String(++caseNo).padStart(12, '0')}`])
  await db.query(
    `INSERT INTO lab_results (index_case_id, accession_number, lab_row_id, positive, tested_on, data)
     SELECT $2, accession_number, lab_row_id, positive, tested_on, data FROM lab_results WHERE index_case_id = $1`, [originId, dest.id])
  await db.query('UPDATE index_cases SET moved_to = $2 WHERE id = $1', [originId, dest.id])
  await db.query('DELETE FROM case_sync_queue')
  return dest.id
}

const caseIdOf = async (id: number) => (await db.query('SELECT case_id FROM index_cases WHERE id = $1', [id]))[0].case_id
const accessions = async (id: number) =>
  (await db.query('SELECT accession_number FROM lab_results WHERE index_case_id = $1 ORDER BY 1', [id])).map((r) => r.accession_number)
const queued = async () => (await db.query('SELECT index_case_id FROM case_sync_queue ORDER BY 1')).map((r) => r.index_case_id)
const lastRowEvents = () => db.query(
  `SELECT kind, index_case_id, detail FROM link_events WHERE lab_row_id = (SELECT max(id) FROM lab_rows) ORDER BY seq`)

describe('a case that moved', () => {
  it('takes no new result: it goes to the case it moved to, in another county, whose job alone is queued', async () => {
    await linkRows([person('M1', { OBRACCESSIONNUM: 'M1-A1' })])
    const [{ id: origin }] = await db.query('SELECT id FROM index_cases')
    const dest = await moveCase(origin, 3) // transferred to Allegany

    expect(await linkRows([person('M1', { OBRACCESSIONNUM: 'M1-A2' })])).toEqual({ linked: 1 })
    expect(await accessions(origin)).toEqual(['M1-A1'])
    expect(await accessions(dest)).toEqual(['M1-A1', 'M1-A2'])
    expect(await queued()).toEqual([dest])
    expect(await count(db, 'index_cases')).toBe(2)
    const events = await lastRowEvents()
    expect(events.map((e) => e.kind)).toEqual(['person_matched', 'lab_result_created'])
    expect(events[1]).toMatchObject({ index_case_id: dest, detail: { moved_from: [await caseIdOf(origin)] } })
  })

  it('in a duplicate chain, only the case at its end takes the result (not the origin too)', async () => {
    await linkRows([person('M2', { OBRACCESSIONNUM: 'M2-A1' })])
    const [{ id: origin }] = await db.query('SELECT id FROM index_cases')
    const middle = await moveCase(origin, 1)
    const end = await moveCase(middle, 1) // origin → middle → end, all in Albany and open

    expect(await linkRows([person('M2', { OBRACCESSIONNUM: 'M2-A2' })])).toEqual({ linked: 1 })
    expect(await accessions(origin)).toEqual(['M2-A1'])
    expect(await accessions(middle)).toEqual(['M2-A1'])
    expect(await accessions(end)).toEqual(['M2-A1', 'M2-A2'])
    expect(await queued()).toEqual([end])
    const created = (await lastRowEvents()).filter((e) => e.kind === 'lab_result_created')
    expect(created).toEqual([{ kind: 'lab_result_created', index_case_id: end, detail: { moved_from: [await caseIdOf(origin), await caseIdOf(middle)] } }])
  })

  it('a result on both the origin and the case it moved to is updated on that case only', async () => {
    await linkRows([person('M3', { OBRACCESSIONNUM: 'M3-A1' })])
    const [{ id: origin }] = await db.query('SELECT id FROM index_cases')
    const dest = await moveCase(origin, 3)
    // Something the next row brings that neither copy has yet.
    await db.query(`UPDATE lab_results SET data = data - 'specimen_collection_date'`)

    expect(await linkRows([person('M3', { OBRACCESSIONNUM: 'M3-A1', OBRCREATEDATE: '21MAR2020:06:03:36.589000' })])).toEqual({ linked: 1 })
    const dates = await db.query(`SELECT index_case_id, data->>'specimen_collection_date' AS d FROM lab_results ORDER BY index_case_id`)
    expect(dates).toEqual([{ index_case_id: origin, d: null }, { index_case_id: dest, d: expect.any(String) }])
    expect(await count(db, 'lab_results')).toBe(2)
    expect(await queued()).toEqual([dest])
    const events = await lastRowEvents()
    expect(events.map((e) => e.kind)).toEqual(['person_matched', 'lab_result_updated'])
    expect(events[1]).toMatchObject({ index_case_id: dest, detail: { fields: ['specimen_collection_date'], moved_from: [await caseIdOf(origin)] } })
  })

  it('a result only on the origin goes to the case it moved to, not back to the origin', async () => {
    await linkRows([person('M4', { OBRACCESSIONNUM: 'M4-A1' })])
    const [{ id: origin }] = await db.query('SELECT id FROM index_cases')
    const dest = await moveCase(origin, 3)
    await db.query('DELETE FROM lab_results WHERE index_case_id = $1', [dest]) // a result the adoption did not copy

    expect(await linkRows([person('M4', { OBRACCESSIONNUM: 'M4-A1', OBRCREATEDATE: '21MAR2020:06:03:36.589000' })])).toEqual({ linked: 1 })
    expect(await accessions(origin)).toEqual(['M4-A1'])
    expect(await accessions(dest)).toEqual(['M4-A1'])
    expect(await queued()).toEqual([dest])
  })

  it('moved to a case of another person: link does not follow (that person is not locked by the batch)', async () => {
    await linkRows([person('M5', { OBRACCESSIONNUM: 'M5-A1' }), person('M6', { OBRACCESSIONNUM: 'M6-A1', PIDDATEOFBIRTH: '02FEB1950:00:00:00.000000' })])
    const [{ id: origin }, { id: other }] = await db.query('SELECT id FROM index_cases ORDER BY id')
    await db.query('UPDATE index_cases SET moved_to = $2 WHERE id = $1', [origin, other])
    await db.query('DELETE FROM case_sync_queue')

    expect(await linkRows([person('M5', { OBRACCESSIONNUM: 'M5-A2' })])).toEqual({ linked: 1 })
    expect(await accessions(origin)).toEqual(['M5-A1', 'M5-A2'])
    expect(await accessions(other)).toEqual(['M6-A1'])
  })
})
