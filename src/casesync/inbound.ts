/**
 * Inbound case sync: changes investigators make in CommCare come back, by polling each
 * participating county's domain from a stored cursor, and by CommCare's case forwarder (forwarder.ts).
 * Both end in importCase, whose rules go in order:
 *   1. a case Herald knows (by case_id) takes CommCare's values: investigators own them. Its lab
 *      results are not imported (they came from Herald or will be posted by it).
 *   2. else the person (by external_id, else by date of birth + last name + first name) gets a new
 *      index case, with its lab results;
 *   3. else a person, a case and its lab results are created.
 * A version already seen (index_cases.commcare_modified_at) is skipped: polls overlap on purpose.
 */
import type { Db, Queryable } from '../db/types.ts'
import { countyOfDomain, type CountyTable } from '../link/counties.ts'
import { lockId, matchKeyOf, matchKeyText, uuidFrom } from '../link/keys.ts'
import type { CommCareCase, CommCareClient } from './client.ts'
import { addEvent } from './jobs.ts'

export type ImportOutcome = 'ignored' | 'unchanged' | 'updated' | 'new_case' | 'new_person'

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i
const DATE = /^\d{4}-\d{2}-\d{2}/

const present = (props: Record<string, string | null>) =>
  Object.fromEntries(Object.entries(props).filter(([, v]) => v !== null && v !== undefined)) as Record<string, string>
const dateOf = (v: string | null | undefined) => (v && DATE.test(v) ? v.slice(0, 10) : null)

/** The case columns CommCare decides: open or closed, when it opened, when its activity ended. */
function caseColumns(cc: CommCareCase) {
  // Cases reached through a duplicate chain may come without `closed` (recorded answers from New
  // York's spaces): a closing date, or CommCare's current_status, says what it would have been.
  const p = cc.properties
  const closed = typeof cc.closed === 'boolean' ? cc.closed : Boolean(cc.date_closed) || p.current_status === 'closed'
  return {
    closed,
    openedOn: dateOf(p.date_opened) ?? dateOf(cc.server_date_opened),
    endedOn: dateOf(p.all_activity_complete_date) ?? (closed ? dateOf(cc.date_closed) : null),
  }
}

export async function importCase(db: Db, client: CommCareClient, cc: CommCareCase, domain: string, counties: CountyTable): Promise<ImportOutcome> {
  if ((cc.properties.case_type ?? '') !== 'patient') return 'ignored'
  const county = countyOfDomain(counties, domain)
  if (!county) return 'ignored'
  const known = await db.transaction((tx) => updateKnown(tx, cc))
  if (known) return known
  // A case new to Herald comes with its lab results: fetched outside any transaction.
  const full = cc.child_cases ? cc : (await client.getCase(domain, cc.case_id)) ?? cc
  return db.transaction(async (tx) => (await updateKnown(tx, cc)) ?? createCase(tx, full, domain, county.fips))
}

/** Rule 1, or undefined when Herald does not know the case. */
async function updateKnown(tx: Queryable, cc: CommCareCase): Promise<ImportOutcome | undefined> {
  const [existing] = await tx.query<{ id: string; data: Record<string, string>; seen: boolean }>(
    'SELECT id::text, data, commcare_modified_at >= $2::timestamptz AS seen FROM index_cases WHERE case_id = $1 FOR UPDATE',
    [cc.case_id, cc.server_date_modified])
  if (!existing) return undefined
  return existing.seen ? 'unchanged' : updateCase(tx, existing, cc)
}

async function updateCase(tx: Queryable, existing: { id: string; data: Record<string, string> }, cc: CommCareCase): Promise<ImportOutcome> {
  const props = present(cc.properties)
  const fields = Object.keys(props).filter((k) => existing.data[k] !== props[k])
  const c = caseColumns(cc)
  await tx.query(
    `UPDATE index_cases SET data = data || $2, closed = $3, opened_on = coalesce($4::date, opened_on),
       activity_ended_on = $5::date, commcare_modified_at = $6, updated_at = now() WHERE id = $1`,
    [existing.id, props, c.closed, c.openedOn, c.endedOn, cc.server_date_modified])
  if (fields.length > 0) await addEvent(tx, existing.id, 'pulled_update', { fields })
  return 'updated'
}

/**
 * A case CommCare holds, as a local index case of `personId` in county `fips` (idempotent: a case
 * already there by its case_id is kept). Returns its id. Also used when a transfer chain ends in a
 * case Herald did not know (outbound.ts).
 */
export async function insertCaseFrom(tx: Queryable, cc: CommCareCase, personId: string, fips: number): Promise<string> {
  const c = caseColumns(cc)
  await tx.query(
    `INSERT INTO index_cases (person_id, county_fips, case_id, data, closed, opened_on, activity_ended_on, commcare_modified_at)
     VALUES ($1, $2, $3, $4, $5, coalesce($6::date, current_date), $7::date, $8) ON CONFLICT (case_id) DO NOTHING`,
    [personId, fips, cc.case_id, present(cc.properties), c.closed, c.openedOn, c.endedOn, cc.server_date_modified])
  const [row] = await tx.query('SELECT id::text FROM index_cases WHERE case_id = $1', [cc.case_id])
  return row.id
}

async function createCase(tx: Queryable, cc: CommCareCase, domain: string, fips: number): Promise<ImportOutcome> {
  const { personId, isNew } = await findOrCreatePerson(tx, cc, domain)
  const id = await insertCaseFrom(tx, cc, personId, fips)
  const results = Object.values(cc.child_cases ?? {}).filter((ch) => ch.properties.case_type === 'lab_result' && ch.properties.accession_number)
  for (const r of results) {
    await tx.query(
      `INSERT INTO lab_results (index_case_id, accession_number, positive, tested_on, data) VALUES ($1, $2, $3, $4::date, $5)
       ON CONFLICT (index_case_id, accession_number) DO NOTHING`,
      [id, r.properties.accession_number, (r.properties.lab_result ?? '').toLowerCase() === 'positive',
        dateOf(r.properties.specimen_collection_date), present(r.properties)])
  }
  await addEvent(tx, id, isNew ? 'pulled_new_person' : 'pulled_new_case',
    { domain, case_id: cc.case_id, person_id: personId, lab_results: results.length })
  return isNew ? 'new_person' : 'new_case'
}

/** Rule 2's person, or rule 3's new one. The match key's lock row serialises this with link. */
async function findOrCreatePerson(tx: Queryable, cc: CommCareCase, domain: string): Promise<{ personId: string; isNew: boolean }> {
  const p = cc.properties
  const externalId = p.external_id?.trim() ?? ''
  if (UUID.test(externalId)) {
    const [byExternal] = await tx.query('SELECT id::text FROM people WHERE external_id = $1', [externalId])
    if (byExternal) return { personId: byExternal.id, isNew: false }
  }
  const dob = dateOf(p.dob)
  const match = matchKeyOf(dob, p.last_name ?? null, p.first_name ?? null)
  if (match) {
    const lock = lockId(`m:${matchKeyText(match)}`)
    await tx.query('INSERT INTO link_locks (key) VALUES ($1) ON CONFLICT DO NOTHING', [lock])
    await tx.query('SELECT 1 FROM link_locks WHERE key = $1 FOR UPDATE', [lock])
    const [byMatch] = await tx.query(
      'SELECT id::text FROM people WHERE date_of_birth = $1 AND match_last = $2 AND match_first = $3 ORDER BY id LIMIT 1',
      [match.dob, match.last, match.first])
    if (byMatch) return { personId: byMatch.id, isNew: false }
  }
  const phone = (p.contact_phone_number || p.phone_home || '').replace(/\D/g, '').replace(/^1(\d{10})$/, '$1')
  const sex = { male: 'M', female: 'F' }[(p.gender ?? '').toLowerCase()] ?? (p.gender ? 'U' : null)
  const [person] = await tx.query(
    `INSERT INTO people (external_id, date_of_birth, match_last, match_first, first_name, middle_name, last_name, sex, phone, address1, city, zip)
     VALUES ($1, $2::date, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) RETURNING id::text`,
    [UUID.test(externalId) ? externalId : uuidFrom(`commcare:${domain}:${cc.case_id}`), dob, match?.last ?? null, match?.first ?? null,
      p.first_name || null, p.middle_name || null, p.last_name || null, sex, phone || null, p.address_street || null,
      p.address_city || null, p.address_zip || null])
  return { personId: person.id, isNew: true }
}
