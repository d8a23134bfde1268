/** Link in tests: the county list fixture, linking until the queue is empty, records compared by content. */
import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { afterAll, beforeAll, beforeEach } from 'vitest'
import type { Db } from '../../src/db/types.ts'
import { createTestDb, type TestDb } from './db.ts'
import { tempDir } from './files.ts'
import { parseCountyList, saveCounties } from '../../src/link/counties.ts'
import { linkUntilEmpty } from '../../src/link/index.ts'
import { createLogger } from '../../src/log.ts'

export const COUNTY_LIST = fileURLToPath(new URL('../fixtures/commcare/county_list_response_ny.json', import.meta.url))

export async function loadCounties(db: Db) {
  const list = parseCountyList(JSON.parse(readFileSync(COUNTY_LIST, 'utf8')))
  return db.transaction((tx) => saveCounties(tx, list))
}

/** Every table emptied (whatever later migrations add) and the county list loaded: a test's clean start. */
export async function resetDb(db: Db) {
  const tables = await db.query(`SELECT tablename FROM pg_tables WHERE schemaname = current_schema() AND tablename <> 'schema_migrations'`)
  await db.exec(`TRUNCATE ${tables.map((t) => t.tablename).join(', ')} RESTART IDENTITY CASCADE`)
  await loadCounties(db)
}

/**
 * One database for the test file, emptied (county list loaded) before each test, and a temporary
 * folder per test; `use` receives them, so a file keeps its own `db` and `dir` variables.
 */
export function freshDbEachTest(use: (db: Db, dir: string) => void) {
  let t: TestDb
  beforeAll(async () => {
    t = await createTestDb()
  })
  afterAll(async () => t.drop())
  beforeEach(async () => {
    await resetDb(t.db)
    const tmp = tempDir()
    use(t.db, tmp.dir)
    return tmp.cleanup
  })
}

/** Links everything waiting; returns the outcome counts. */
export const linkAll = (db: Db, batch = 100) => linkUntilEmpty(db, batch, createLogger('silent'))

/**
 * People, cases, results and events described without ids or times, so two databases that
 * linked the same rows can be compared.
 */
export async function snapshot(db: Db) {
  const people = await db.query(`
    SELECT p.last_name, p.first_name, p.date_of_birth::text AS dob, p.phone,
      (SELECT array_agg(patient_key ORDER BY patient_key) FROM person_keys k WHERE k.person_id = p.id) AS keys,
      (SELECT array_agg(c.county_fips || ':' || c.closed || ':' ||
         (SELECT string_agg(accession_number, ',' ORDER BY accession_number) FROM lab_results r WHERE r.index_case_id = c.id)
         ORDER BY c.county_fips, c.case_id) FROM index_cases c WHERE c.person_id = p.id) AS cases
    FROM people p ORDER BY 1, 2, 3, 5`)
  const events = await db.query(`SELECT lab_row_id, kind, count(*)::int AS n FROM link_events GROUP BY 1, 2 ORDER BY 1, 2`)
  const data = await db.query(`SELECT c.case_id, c.data, array_agg(r.data ORDER BY r.accession_number) AS results
    FROM index_cases c JOIN lab_results r ON r.index_case_id = c.id GROUP BY c.id ORDER BY c.case_id`)
  return { people, events, data }
}

export async function count(db: Db, table: string, where = 'true'): Promise<number> {
  return (await db.query(`SELECT count(*)::int AS n FROM ${table} WHERE ${where}`))[0].n
}
