import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import type { Db } from '../../src/db/types.ts'
import { createTestDb, type TestDb } from '../helpers/db.ts'
import { copyFixture, exportText, row, tempDir, writeExport } from '../helpers/files.ts'
import { ingestPath } from '../helpers/ingest.ts'
import { count, linkAll, loadCounties } from '../helpers/link.ts'

let t: TestDb
let db: Db
let dir: string

beforeAll(async () => {
  t = await createTestDb()
  db = t.db
})
afterAll(async () => t.drop())
beforeEach(async () => {
  await db.exec(`TRUNCATE inbox_files, files, lab_rows, lab_row_keys, ingest_errors, link_queue, people, person_keys,
    index_cases, lab_results, link_events, link_changes, exposure_queue, counties RESTART IDENTITY CASCADE`)
  await loadCounties(db)
  const tmp = tempDir()
  dir = tmp.dir
  return tmp.cleanup
})

let fileNo = 0
/** Ingests rows as one export file and links everything waiting. */
async function linkRows(rows: string[][], version: 1 | 2 | 3 = 3) {
  const path = writeExport(dir, `export-${++fileNo}.txt`, exportText(version, rows))
  await ingestPath(db, path)
  return linkAll(db)
}
async function linkFixture(name: string) {
  await ingestPath(db, copyFixture(name, dir))
  return linkAll(db)
}
const events = (rowId: number) => db.query('SELECT kind, detail FROM link_events WHERE lab_row_id = $1 ORDER BY id', [rowId])
const kinds = async (rowId: number) => (await events(rowId)).map((e) => e.kind)

describe('link', () => {
  it('links the fixture rows: a person, a case in the state domain (unknown county) and a lab result each', async () => {
    expect(await linkFixture('new_records.txt')).toEqual({ linked: 3 })
    expect(await count(db, 'people')).toBe(3)
    expect(await count(db, 'index_cases')).toBe(3)
    expect(await count(db, 'lab_results')).toBe(3)
    expect(await kinds(1)).toEqual(['county_unknown', 'person_created', 'case_created', 'lab_result_created', 'exposure_marked'])
    const [c] = await db.query(`SELECT c.county_fips, c.sync_state, c.data, p.phone, p.external_id::text AS ext
      FROM index_cases c JOIN people p ON p.id = c.person_id WHERE p.last_name = 'LASTNAME'`)
    expect(c).toMatchObject({ county_fips: 900, sync_state: 'pending', phone: '5551234567' })
    expect(c.data).toMatchObject({
      first_name: 'FIRSTNAME', last_name: 'LASTNAME', dob: '1947-03-01', contact_phone_number: '5551234567',
      has_phone_number: 'yes', county_commcare_domain: 'ny-statewide-cdcms', external_id: c.ext, patient_type: 'confirmed',
    })
    expect(await count(db, 'exposure_queue')).toBe(3)
    expect(await count(db, 'link_queue')).toBe(0)
  })
})
