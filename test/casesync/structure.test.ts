/**
 * The project space's own case structure, end to end through the sandbox: how lab_result cases are
 * indexed to their patient (HERALD_COMMCARE_LAB_RESULT_INDEX) and whom the forms are submitted as.
 */
import { describe, expect, it } from 'vitest'
import type { Db } from '../../src/db/types.ts'
import { casesync, caseOf, labResults, linkRows, patients, startSandbox, syncAll } from '../helpers/casesync.ts'
import { row } from '../helpers/files.ts'
import { freshDbEachTest } from '../helpers/link.ts'

const ALBANY = 'ny-albany-cdcms'
let db: Db
let dir: string
freshDbEachTest((d, x) => {
  db = d
  dir = x
})

describe('the lab_result index', () => {
  it('is a child index by default, as New York\'s project spaces hold lab results', async () => {
    const s = await startSandbox()
    await linkRows(db, dir, [row(3, { PIDPATIENTKEY: 'S1', PIDCOUNTYCODE: '1', OBRACCESSIONNUM: 'S1-A1' })])
    expect(await syncAll(db, casesync(s).out)).toEqual({ posted: 1 })
    const [r] = labResults(s, ALBANY)
    expect(r.indices.parent).toEqual({ case_id: (await caseOf(db)).case_id, case_type: 'patient', relationship: 'child' })
  })

  it('is an extension index with HERALD_COMMCARE_LAB_RESULT_INDEX=extension', async () => {
    const s = await startSandbox()
    await linkRows(db, dir, [row(3, { PIDPATIENTKEY: 'S2', PIDCOUNTYCODE: '1', OBRACCESSIONNUM: 'S2-A1' })])
    expect(await syncAll(db, casesync(s, { HERALD_COMMCARE_LAB_RESULT_INDEX: 'extension' }).out)).toEqual({ posted: 1 })
    expect(labResults(s, ALBANY)[0].indices.parent.relationship).toBe('extension')
  })

  for (const setting of ['child', 'extension']) {
    it(`leaves the space's own child lab_result cases as they are, one per accession (setting: ${setting})`, async () => {
      const s = await startSandbox()
      // An investigator's case whose lab results CommCare holds as child cases; Herald knows the case.
      const p = s.createCase(ALBANY, { case_name: 'S3', first_name: 'Kept' }, [{ case_type: 'lab_result', accession_number: 'S3-A1', lab_result: 'positive' }])
      const [own] = labResults(s, ALBANY)
      expect(own.indices.parent.relationship).toBe('child')
      await linkRows(db, dir, [row(3, { PIDPATIENTKEY: 'S3', PIDCOUNTYCODE: '1', OBRACCESSIONNUM: 'S3-A1' }),
        row(3, { PIDPATIENTKEY: 'S3', PIDCOUNTYCODE: '1', OBRACCESSIONNUM: 'S3-A2' })])
      await db.query('UPDATE index_cases SET case_id = $1, synced_at = now()', [p.case_id])

      expect(await syncAll(db, casesync(s, { HERALD_COMMCARE_LAB_RESULT_INDEX: setting }).out)).toEqual({ posted: 1 })
      expect(patients(s)).toHaveLength(1)
      const results = labResults(s, ALBANY)
      expect(results.map((r) => r.properties.accession_number).sort()).toEqual(['S3-A1', 'S3-A2'])
      const kept = results.find((r) => r.properties.accession_number === 'S3-A1')!
      expect(kept.case_id).toBe(own.case_id)
      expect(kept.indices.parent).toEqual({ case_id: p.case_id, case_type: 'patient', relationship: 'child' })
      expect(kept.properties.lab_result).toBe('positive')
      const added = results.find((r) => r.properties.accession_number === 'S3-A2')!
      expect(added.indices.parent).toEqual({ case_id: p.case_id, case_type: 'patient', relationship: setting })
    })
  }
})

describe('the form', () => {
  it('is submitted as the CommCare user of HERALD_COMMCARE_USER_ID', async () => {
    const s = await startSandbox()
    await linkRows(db, dir, [row(3, { PIDPATIENTKEY: 'S4', PIDCOUNTYCODE: '1' })])
    const env = { HERALD_COMMCARE_USER_ID: 'f8df11f165c24606afc47c5ce74b7da1' }
    expect(await syncAll(db, casesync(s, env).out)).toEqual({ posted: 1 })
    const [p] = patients(s, ALBANY)
    expect(p.user_id).toBe('f8df11f165c24606afc47c5ce74b7da1')
    expect(p.opened_by).toBe('f8df11f165c24606afc47c5ce74b7da1')
    expect(labResults(s, ALBANY)[0].user_id).toBe('f8df11f165c24606afc47c5ce74b7da1')
  })
})
