/**
 * Answers to "why was this result linked to this case": a lab row with every decision link made
 * about it and the records it touched, and a person with their keys, cases, results and history.
 */
import type { Queryable } from '../db/types.ts'
import { matchKeyOf } from './keys.ts'

/** A queued row's state: waiting its first try, retrying after failures, or failed (every attempt, until `herald link --retry`). */
export const queueState = (q: Record<string, any>) => (q.failed_at ? 'failed' : q.attempts > 0 ? 'retrying' : 'waiting')

const EVENT_COLUMNS = `e.lab_row_id, e.kind, e.person_id, e.index_case_id, e.lab_result_id, e.detail, e.at`

export async function traceRow(q: Queryable, rowId: number) {
  const [row] = await q.query(
    `SELECT r.id, r.version, r.line, r.seen_before, r.ingested_at, f.name AS file, r.patient_key, r.accession_number,
       r.county_fips, r.collected_at, r.result_positive
     FROM lab_rows r JOIN files f ON f.id = r.file_id WHERE r.id = $1`, [rowId])
  if (!row) return undefined
  const [queue] = await q.query('SELECT attempts, retry_at, last_error, failed_at FROM link_queue WHERE lab_row_id = $1', [rowId])
  const events = await q.query(`SELECT ${EVENT_COLUMNS} FROM link_events e WHERE e.lab_row_id = $1 ORDER BY e.at, e.seq`, [rowId])
  const changes = await q.query(
    'SELECT target, target_id, applied, dropped, at FROM link_changes WHERE lab_row_id = $1 ORDER BY seq', [rowId])
  const caseIds = [...new Set(events.map((e) => e.index_case_id).filter(Boolean))]
  const cases = await q.query(
    `SELECT c.id, c.case_id, c.person_id, c.county_fips, co.domain, c.closed, q.generation AS sync_generation, c.reinfection_of,
       (SELECT array_agg(r.accession_number ORDER BY r.id) FROM lab_results r WHERE r.index_case_id = c.id) AS accessions
     FROM index_cases c JOIN counties co ON co.fips = c.county_fips LEFT JOIN case_sync_queue q ON q.index_case_id = c.id
     WHERE c.id = ANY($1::bigint[]) ORDER BY c.id`, [caseIds])
  const state = queue ? queueState(queue) : events.length ? 'linked' : 'unknown'
  return { row, state, queue, events, changes, cases }
}

/** A person by id, else by external id (uuid), else by patient key (often digits too). */
export async function findPerson(q: Queryable, ref: string): Promise<number | undefined> {
  const [p] = await q.query(
    `SELECT id FROM people WHERE $1 ~ '^[0-9]{1,18}$' AND id = CASE WHEN $1 ~ '^[0-9]{1,18}$' THEN $1::bigint END
     UNION ALL SELECT id FROM people WHERE $1 ~* '^[0-9a-f]{8}-([0-9a-f]{4}-){3}[0-9a-f]{12}$' AND external_id::text = lower($1)
     UNION ALL SELECT person_id FROM person_keys WHERE patient_key = $1
     LIMIT 1`, [ref])
  return p?.id
}

export async function describePerson(q: Queryable, id: number) {
  const [person] = await q.query(
    `SELECT id, external_id, first_name, middle_name, last_name, date_of_birth::text AS date_of_birth, sex, phone,
       address1, address2, city, zip, created_at, updated_at FROM people WHERE id = $1`, [id])
  if (!person) return undefined
  const keys = await q.query('SELECT patient_key, lab_row_id, added_at FROM person_keys WHERE person_id = $1 ORDER BY added_at, patient_key', [id])
  const cases = await q.query(
    `SELECT c.id, c.case_id, c.county_fips, co.display AS county, co.domain, c.closed, c.opened_on::text AS opened_on,
       c.activity_ended_on::text AS activity_ended_on, c.reinfection_of, q.generation AS sync_generation, q.failed_at AS sync_failed_at,
       c.synced_at, c.data
     FROM index_cases c JOIN counties co ON co.fips = c.county_fips LEFT JOIN case_sync_queue q ON q.index_case_id = c.id
     WHERE c.person_id = $1 ORDER BY c.id`, [id])
  const results = await q.query(
    `SELECT r.id, r.index_case_id, r.accession_number, r.positive, r.tested_on::text AS tested_on, r.lab_row_id,
       (SELECT true FROM exposure_queue x WHERE x.lab_result_id = r.id) AS exposure_marked
     FROM lab_results r JOIN index_cases c ON c.id = r.index_case_id WHERE c.person_id = $1 ORDER BY r.id`, [id])
  const events = await q.query(`SELECT ${EVENT_COLUMNS} FROM link_events e
    WHERE e.lab_row_id IN (SELECT lab_row_id FROM link_events WHERE person_id = $1) ORDER BY e.at, e.lab_row_id, e.seq`, [id])
  const syncEvents = await q.query(
    `SELECT e.index_case_id, e.kind, e.detail, e.at FROM case_sync_events e
     WHERE e.index_case_id IN (SELECT id FROM index_cases WHERE person_id = $1) ORDER BY e.id`, [id])
  return { person, keys, cases, results, events, syncEvents }
}

/** How a person is looked for: their patient key, rule (b)'s date of birth + names, or a result's accession number. */
export type PersonSearch =
  | { by: 'patient_key'; patientKey: string }
  | { by: 'name'; lastName: string; firstName: string; dob: string }
  | { by: 'accession'; accession: string }

export interface PersonFound {
  id: string
  first_name: string | null
  last_name: string | null
  date_of_birth: string | null
  keys: string[]
}

/**
 * The people a search finds (at most 50), and for an accession number also the lab rows carrying
 * it that link has not decided about yet (waiting, retrying or failed in link's queue). Names match
 * as link matches them (rule (b): upper case, the first name's first word).
 */
export async function searchPeople(q: Queryable, s: PersonSearch): Promise<{ people: PersonFound[]; pendingRows: Record<string, any>[] }> {
  let ids: string[] = []
  let pendingRows: Record<string, any>[] = []
  if (s.by === 'patient_key') {
    ids = (await q.query('SELECT person_id::text AS id FROM person_keys WHERE patient_key = $1', [s.patientKey.trim()])).map((r) => r.id)
  } else if (s.by === 'name') {
    const m = matchKeyOf(s.dob, s.lastName, s.firstName)
    if (m) {
      ids = (await q.query('SELECT id::text AS id FROM people WHERE date_of_birth = $1::date AND match_last = $2 AND match_first = $3 ORDER BY id LIMIT 50',
        [m.dob, m.last, m.first])).map((r) => r.id)
    }
  } else {
    const accession = s.accession.trim()
    ids = (await q.query(
      `SELECT DISTINCT c.person_id::text AS id FROM lab_results r JOIN index_cases c ON c.id = r.index_case_id WHERE r.accession_number = $1 LIMIT 50`,
      [accession])).map((r) => r.id)
    // Link's queue is small (rows not linked yet): read through it, not through every lab row.
    pendingRows = await q.query(
      `SELECT r.id::text AS id, f.name AS file, r.line, q.attempts, q.retry_at, q.failed_at, q.last_error
       FROM link_queue q JOIN lab_rows r ON r.id = q.lab_row_id JOIN files f ON f.id = r.file_id WHERE r.accession_number = $1 ORDER BY r.id LIMIT 50`,
      [accession])
    pendingRows = pendingRows.map((r) => ({ ...r, state: queueState(r) }))
  }
  if (ids.length === 0) return { people: [], pendingRows }
  const people = await q.query<PersonFound>(
    `SELECT p.id::text AS id, p.first_name, p.last_name, p.date_of_birth::text AS date_of_birth,
       coalesce((SELECT array_agg(k.patient_key ORDER BY k.added_at, k.patient_key) FROM person_keys k WHERE k.person_id = p.id), '{}') AS keys
     FROM people p WHERE p.id = ANY($1::bigint[]) ORDER BY p.last_name, p.first_name, p.id`, [ids])
  return { people, pendingRows }
}

/** A person and every lab row link decided about for them, each with its trace (what `herald person` and `herald trace` show). */
export async function personWithTraces(q: Queryable, id: number, maxRows = 100) {
  const p = await describePerson(q, id)
  if (!p) return undefined
  const rowIds = [...new Set(p.events.map((e) => Number(e.lab_row_id)))].slice(0, maxRows)
  const traces = []
  for (const rowId of rowIds) {
    const t = await traceRow(q, rowId)
    if (t) traces.push(t)
  }
  return { ...p, traces }
}
