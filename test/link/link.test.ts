import { describe, expect, it } from 'vitest'
import type { Db } from '../../src/db/types.ts'
import { copyFixture, exportText, row, writeExport } from '../helpers/files.ts'
import { ingestPath } from '../helpers/ingest.ts'
import { count, linkAll, freshDbEachTest } from '../helpers/link.ts'

let db: Db
let dir: string
freshDbEachTest((d, x) => {
  db = d
  dir = x
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
const events = (rowId: number) => db.query('SELECT kind, detail FROM link_events WHERE lab_row_id = $1 ORDER BY seq', [rowId])
const kinds = async (rowId: number) => (await events(rowId)).map((e) => e.kind)

describe('link', () => {
  it('links the fixture rows: a person, a case in the state domain (unknown county) and a lab result each', async () => {
    expect(await linkFixture('new_records.txt')).toEqual({ linked: 3 })
    expect(await count(db, 'people')).toBe(3)
    expect(await count(db, 'index_cases')).toBe(3)
    expect(await count(db, 'lab_results')).toBe(3)
    expect(await kinds(1)).toEqual(['county_unknown', 'person_created', 'case_created', 'lab_result_created'])
    const [c] = await db.query(`SELECT c.county_fips, q.generation, c.data, p.phone, p.external_id::text AS ext
      FROM index_cases c JOIN people p ON p.id = c.person_id LEFT JOIN case_sync_queue q ON q.index_case_id = c.id
      WHERE p.last_name = 'LASTNAME'`)
    expect(c).toMatchObject({ county_fips: 900, generation: 1, phone: '5551234567' }) // to be synced
    expect(c.data).toMatchObject({
      first_name: 'FIRSTNAME', last_name: 'LASTNAME', dob: '1947-03-01', contact_phone_number: '5551234567',
      has_phone_number: 'yes', county_commcare_domain: 'ny-statewide-cdcms', external_id: c.ext, patient_type: 'confirmed',
    })
    expect(await count(db, 'exposure_queue')).toBe(3)
    expect(await count(db, 'link_queue')).toBe(0)
  })

  it('finds a person by patient key, else by date of birth and names (adding the key), else creates one', async () => {
    const base = { PIDDATEOFBIRTH: '05MAY1980:00:00:00.000000', PIDLASTNAME: 'Testperson', PIDFIRSTNAME: 'Mary Ann', PIDCOUNTYCODE: '1' }
    await linkRows([
      row(3, { ...base, PIDPATIENTKEY: 'K-1' }),
      // (a) the same key under another name and birth date: the key decides.
      row(3, { PIDPATIENTKEY: 'K-1', PIDLASTNAME: 'Othername', PIDFIRSTNAME: 'X', PIDDATEOFBIRTH: '01JAN1990:00:00:00.000000', PIDCOUNTYCODE: '1' }),
      // (b) another key, the same birth date, names in other case, "MARY" for "Mary Ann".
      row(3, { ...base, PIDPATIENTKEY: 'K-2', PIDLASTNAME: 'TESTPERSON', PIDFIRSTNAME: 'mary' }),
      // (c) another birth date: someone else.
      row(3, { ...base, PIDPATIENTKEY: 'K-3', PIDDATEOFBIRTH: '06MAY1980:00:00:00.000000' }),
    ])
    const people = await db.query(`SELECT p.id, array_agg(k.patient_key ORDER BY k.patient_key) AS keys
      FROM people p JOIN person_keys k ON k.person_id = p.id GROUP BY p.id ORDER BY p.id`)
    expect(people.map((p) => p.keys)).toEqual([['K-1', 'K-2'], ['K-3']])
    // Nothing of the row is new to the case (its other name is logged as dropped); the result is.
    expect(await kinds(2)).toEqual(['person_matched', 'lab_result_created'])
    expect((await events(2))[0].detail).toEqual({ by: 'patient_key' })
    expect(await kinds(3)).toEqual(['person_matched', 'patient_key_added', 'lab_result_created'])
    expect((await events(3))[0].detail).toEqual({ by: 'date_of_birth_and_name' })
    expect(await kinds(4)).toEqual(['person_created', 'case_created', 'lab_result_created'])
    // One case for the first person in Albany, holding three results.
    expect(await db.query('SELECT person_id, count(*)::int AS n FROM lab_results r JOIN index_cases c ON c.id = r.index_case_id GROUP BY 1 ORDER BY 1'))
      .toEqual([{ person_id: 1, n: 3 }, { person_id: 2, n: 1 }])
  })

  it('opens one case per county for the same person', async () => {
    await linkRows([row(3, { PIDPATIENTKEY: 'K-9', PIDCOUNTYCODE: '1' }), row(3, { PIDPATIENTKEY: 'K-9', PIDCOUNTYCODE: '3' })])
    expect(await count(db, 'people')).toBe(1)
    const cases = await db.query('SELECT county_fips, data->>\'county_commcare_domain\' AS domain FROM index_cases ORDER BY county_fips')
    expect(cases).toEqual([{ county_fips: 1, domain: 'ny-albany-cdcms' }, { county_fips: 3, domain: 'ny-allegany-cdcms' }])
  })

  it('sends an unknown county to the state domain and ignores a non-participating one, with the reason', async () => {
    await linkRows([row(3, { PIDCOUNTYCODE: '4242' }), row(3, { PIDCOUNTYCODE: '61' })])
    expect(await kinds(1)).toEqual(['county_unknown', 'person_created', 'case_created', 'lab_result_created'])
    expect((await events(1))[0].detail).toEqual({ fips: 4242, domain: 'ny-statewide-cdcms' })
    expect(await events(2)).toEqual([{ kind: 'ignored', detail: { reason: 'county does not participate', fips: 61, county: 'New York' } }])
    expect(await count(db, 'people')).toBe(1) // nothing is kept about the ignored row's person
  })

  it('fills in what later versions of the same rows add (v2, v3 added_info) and overwrites nothing', async () => {
    await linkFixture('new_records.txt')
    const before = await db.query('SELECT id, data FROM lab_results ORDER BY id')
    const casesBefore = await db.query('SELECT id, data FROM index_cases ORDER BY id')
    await db.query('DELETE FROM case_sync_queue') // as if case sync had posted them
    expect(await linkFixture('v2_new_records_added_info.txt')).toEqual({ linked: 2 })
    expect(await linkFixture('v3_new_records_added_info.txt')).toEqual({ linked: 2 })
    const after = await db.query('SELECT id, data FROM lab_results ORDER BY id')
    for (const [i, b] of before.entries()) expect(after[i].data).toMatchObject(b.data) // every earlier value kept
    // SMITH's row in v2 brings employer and school; the v3 rows bring symptoms and first test.
    expect(after[1].data).toMatchObject({ employer_name: 'Employer Name', school_name: 'School Name', employee_job_title: 'Employee Job Title' })
    expect(after[0].data).toMatchObject({ employer_name: 'cool employer', first_test: 'yes', healthcare_employee: 'no', eclrs_symptomatic: 'maybe so' })
    expect(after[2].data).toMatchObject({ first_test: 'A', aoe_date: '20MAR2020:01:02:03.000000', eclrs_pregnant: 'G' })
    const smithRow = (await db.query(`SELECT id FROM lab_rows WHERE seen_before AND version = 2 AND last_name = 'SMITH'`))[0].id
    expect(await kinds(smithRow)).toEqual(['county_unknown', 'person_matched', 'lab_result_updated'])
    const casesAfter = await db.query('SELECT id, data FROM index_cases ORDER BY id')
    for (const [i, b] of casesBefore.entries()) expect(casesAfter[i].data).toEqual(b.data)
    // Each case whose lab result changed is posted again: SMITH's once (v2), the two others' twice.
    expect(await db.query('SELECT index_case_id, generation FROM case_sync_queue ORDER BY 1'))
      .toEqual([{ index_case_id: 1, generation: 2 }, { index_case_id: 2, generation: 1 }, { index_case_id: 3, generation: 1 }])
  })

  it('keeps what a record holds when a later row disagrees, and logs the dropped value', async () => {
    const first = row(3, { PIDPATIENTKEY: 'K-5', PIDADDRESSLINE1: '1 FIRST ST', OBRACCESSIONNUM: 'A-5', PIDCOUNTYCODE: '1' })
    await linkRows([first])
    await db.query(`UPDATE index_cases SET data = data || '{"current_status": "open", "first_name": "Investigator"}'`)
    const second = [...first]
    second[5] = '2 SECOND AVE' // PIDADDRESSLINE1
    second[2] = 'NEWFIRST' // PIDFIRSTNAME
    expect(await linkRows([second])).toEqual({ no_new_information: 1 })
    const [c] = await db.query('SELECT data FROM index_cases')
    expect(c.data).toMatchObject({ address_street: '1 FIRST ST', first_name: 'Investigator', current_status: 'open' })
    const changes = await db.query('SELECT target, applied, dropped FROM link_changes WHERE lab_row_id = 2 ORDER BY target')
    expect(changes).toEqual([
      { target: 'index_case', applied: {}, dropped: expect.objectContaining({ address_street: '2 SECOND AVE', first_name: 'NEWFIRST' }) },
      { target: 'person', applied: {}, dropped: { address1: '2 SECOND AVE', first_name: 'NEWFIRST' } },
    ])
  })

  it('reactivates a closed case for a result within 90 days of its opening, and opens a reinfection case from day 90', async () => {
    const at = (day: string) => ({ OBRCOLLECTIONDATE: `${day}:10:00:00.000000`, PIDCOUNTYCODE: '1' })
    await linkRows([row(3, { PIDPATIENTKEY: 'KA', ...at('01JUN2026') }), row(3, { PIDPATIENTKEY: 'KB', ...at('01JUN2026') })])
    expect(await db.query('SELECT DISTINCT opened_on::text AS d FROM index_cases')).toEqual([{ d: '2026-06-01' }])
    await db.query(`UPDATE index_cases SET closed = true, activity_ended_on = '2026-06-15'`)
    await db.query('DELETE FROM case_sync_queue')

    const kbFirst = (await db.query(`SELECT raw FROM lab_rows WHERE patient_key = 'KB'`))[0].raw.split('|')
    await linkRows([
      row(3, { PIDPATIENTKEY: 'KA', ...at('10JUN2026') }), // before the activity ended: a late result of that case
      row(3, { PIDPATIENTKEY: 'KA', ...at('29AUG2026') }), // day 89: reactivated
      row(3, { PIDPATIENTKEY: 'KB', ...at('30AUG2026') }), // day 90: a reinfection
    ])
    expect(await kinds(3)).toEqual(['person_matched', 'lab_result_created'])
    expect(await kinds(4)).toEqual(['person_matched', 'case_reactivated', 'lab_result_created'])
    expect((await events(4))[1].detail).toEqual({ days_since_opened: 89 })
    expect(await kinds(5)).toEqual(['person_matched', 'case_reinfection', 'lab_result_created'])
    expect((await events(5))[1].detail).toMatchObject({ days_since_opened: 90 })

    const cases = await db.query(`SELECT c.id, k.patient_key, c.closed, c.reinfection_of, q.index_case_id IS NOT NULL AS to_sync, c.data,
        (SELECT count(*)::int FROM lab_results r WHERE r.index_case_id = c.id) AS results
      FROM index_cases c JOIN person_keys k ON k.person_id = c.person_id LEFT JOIN case_sync_queue q ON q.index_case_id = c.id ORDER BY c.id`)
    expect(cases.map(({ data, ...c }) => c)).toEqual([
      { id: 1, patient_key: 'KA', closed: false, reinfection_of: null, to_sync: true, results: 3 },
      { id: 2, patient_key: 'KB', closed: true, reinfection_of: null, to_sync: true, results: 1 },
      { id: 3, patient_key: 'KB', closed: false, reinfection_of: 2, to_sync: true, results: 1 },
    ])
    expect(cases[0].data.reactivated_case).toBe('yes')
    expect(cases[1].data.reinfected_case_created).toBe('yes')
    expect(cases[2].data).toMatchObject({ reinfected_case: 'yes', archived_case_id: (await db.query('SELECT case_id FROM index_cases WHERE id = 2'))[0].case_id })

    // The next result for KB goes to the reinfection case, not back to the ended one; a later version
    // of KB's first result (an employer added) updates that result where it is, on the ended case.
    const again = [...kbFirst]
    again[44] = 'EMPLOYER' // PIDEMPLOYERNAME
    await linkRows([row(3, { PIDPATIENTKEY: 'KB', ...at('02SEP2026') }), again])
    expect(await db.query('SELECT index_case_id FROM lab_results WHERE lab_row_id = 6')).toEqual([{ index_case_id: 3 }])
    expect(await kinds(7)).toEqual(['person_matched', 'lab_result_updated'])
    expect(await db.query(`SELECT index_case_id, data->>'employer_name' AS employer FROM lab_results WHERE lab_row_id = 2`))
      .toEqual([{ index_case_id: 2, employer: 'EMPLOYER' }])
    expect(await count(db, 'lab_results')).toBe(6)
  })
})
