/**
 * Inbound case sync: changes investigators make in CommCare come back, by polling each
 * participating county's domain from a stored cursor, and by CommCare's case forwarder (forwarder.ts).
 * Both end in importCase, whose rules go in order (docs/architecture.md gives the reasons):
 *   1. a case Herald knows (by case_id) takes CommCare's values: investigators own them. Its lab
 *      results are not imported (they came from Herald or will be posted by it).
 *   2. a case new to Herald that is not a person's case yet is skipped, with its reason
 *      (skipReason), in commcare_skipped_cases: outcome `skipped`. A later version that passes is
 *      imported then, and its skip row goes.
 *   3. else the person (by any external id CommCare holds, else by date of birth + last name + first
 *      name) gets a new index case, with its lab results;
 *   4. else a person, a case and its lab results are created.
 * A blank value never replaces a value Herald holds. A version already seen (index_cases.
 * commcare_modified_at, or commcare_skipped_cases.modified_at) is `unchanged`: polls overlap on purpose.
 */
import type { Db, Queryable } from '../db/types.ts'
import { countyOfDomain, type CountyTable } from '../link/counties.ts'
import { lockId, matchKeyOf, matchKeyText, uuidFrom } from '../link/keys.ts'
import type { CommCareCase, CommCareClient } from './client.ts'
import { addEvent } from './jobs.ts'

export type ImportOutcome = 'ignored' | 'unchanged' | 'updated' | 'new_case' | 'new_person' | 'skipped'

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i
const DATE = /^\d{4}-\d{2}-\d{2}/

/** A value, or null when CommCare's is blank ('' and whitespace are how its forms say "nothing"). */
const text = (v: string | null | undefined) => (v?.trim() ? v.trim() : null)
/** The properties with a value: a blank one never replaces what Herald holds (a first name must not become ""). */
const present = (props: Record<string, string | null>) =>
  Object.fromEntries(Object.entries(props).filter(([, v]) => text(v) !== null)) as Record<string, string>
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
  const reason = skipReason(cc)
  if (reason) return recordSkip(db, cc, domain, reason)
  // A case new to Herald comes with its lab results: fetched outside any transaction.
  const full = cc.child_cases ? cc : (await client.getCase(domain, cc.case_id)) ?? cc
  return db.transaction(async (tx) => (await updateKnown(tx, cc)) ?? createCase(tx, full, domain, county.fips))
}

/**
 * Rule 2: why a patient case new to Herald is not imported, or undefined. Viaduct skips the same ones:
 * each is not (yet) a person's case, and importing it makes a blank or wrong person.
 */
export function skipReason(cc: CommCareCase): string | undefined {
  const p = cc.properties
  if (!text(p.first_name) && !text(p.last_name) && !text(p.full_name) && !dateOf(text(p.dob))) return 'no name and date of birth'
  if (text(p.stub)?.toLowerCase() === 'yes') return 'stub'
  if (text(p.final_disposition)) return 'final disposition'
  if (['pending', 'sent'].includes(text(p.transfer_status)?.toLowerCase() ?? '')) return 'transfer pending'
  return undefined
}

/** One row per skipped case, the latest version's reason (no values of the case: they are personal). */
async function recordSkip(db: Db, cc: CommCareCase, domain: string, reason: string): Promise<ImportOutcome> {
  const rows = await db.query(
    `INSERT INTO commcare_skipped_cases (case_id, domain, reason, modified_at) VALUES ($1, $2, $3, $4)
     ON CONFLICT (case_id) DO UPDATE SET domain = excluded.domain, reason = excluded.reason, modified_at = excluded.modified_at, at = now()
       WHERE commcare_skipped_cases.modified_at < excluded.modified_at
     RETURNING case_id`,
    [cc.case_id, domain, reason, cc.server_date_modified])
  return rows.length > 0 ? 'skipped' : 'unchanged'
}

/** Skipped pulled cases by domain and reason, for `herald cases`. */
export async function skippedByReason(db: Queryable): Promise<{ domain: string; reason: string; count: number }[]> {
  return db.query(
    'SELECT domain, reason, count(*)::int AS count FROM commcare_skipped_cases GROUP BY domain, reason ORDER BY domain, reason')
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
  // A case Herald holds is no longer a skipped one (imported now, or reached by an outbound chain).
  await tx.query('DELETE FROM commcare_skipped_cases WHERE case_id = $1', [cc.case_id])
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

/** A row of link_locks, taken for the rest of the transaction (keys.ts says why rows). */
async function lockKey(tx: Queryable, key: string) {
  const lock = lockId(key)
  await tx.query('INSERT INTO link_locks (key) VALUES ($1) ON CONFLICT DO NOTHING', [lock])
  await tx.query('SELECT 1 FROM link_locks WHERE key = $1 FOR UPDATE', [lock])
}

/**
 * Rule 3's person, or rule 4's new one. Any external id CommCare holds names a person: a uuid may be
 * people.external_id (Herald's own), and every one is kept in person_external_ids (New York's are
 * numeric MPI ids), so six cases of one person with one id are one person.
 */
async function findOrCreatePerson(tx: Queryable, cc: CommCareCase, domain: string): Promise<{ personId: string; isNew: boolean }> {
  const p = cc.properties
  const raw = text(p.external_id)
  const uuid = raw !== null && UUID.test(raw)
  const externalId = uuid ? raw.toLowerCase() : raw
  if (externalId) {
    // Two imports of cases with one external id (two domains, or the poll and the forwarder) wait
    // for each other here, so the second finds the person the first made. Taken before the match
    // key's lock, in every import, so two imports never wait on each other in a circle.
    await lockKey(tx, `x:${externalId}`)
    const [byExternal] = await tx.query(
      `SELECT person_id::text AS id FROM person_external_ids WHERE external_id = $1
       UNION ALL SELECT id::text FROM people WHERE external_id = $2::uuid LIMIT 1`, [externalId, uuid ? externalId : null])
    if (byExternal) return { personId: byExternal.id, isNew: false }
  }
  const found = await byMatchKey(tx, p)
  const person = found ? { personId: found, isNew: false } : { personId: await createPerson(tx, cc, domain, uuid ? externalId : null), isNew: true }
  if (externalId) {
    await tx.query('INSERT INTO person_external_ids (external_id, person_id) VALUES ($1, $2) ON CONFLICT DO NOTHING', [externalId, person.personId])
  }
  return person
}

/** Rule 3 by date of birth + last name + first name. The match key's lock row serialises this with link. */
async function byMatchKey(tx: Queryable, p: Record<string, string | null>): Promise<string | undefined> {
  const match = matchKeyOf(dateOf(p.dob), p.last_name ?? null, p.first_name ?? null)
  if (!match) return undefined
  await lockKey(tx, `m:${matchKeyText(match)}`)
  const [byMatch] = await tx.query(
    'SELECT id::text FROM people WHERE date_of_birth = $1 AND match_last = $2 AND match_first = $3 ORDER BY id LIMIT 1',
    [match.dob, match.last, match.first])
  return byMatch?.id
}

/** Rule 4: a person from the case's properties; blank ones stay empty (null), never "". */
async function createPerson(tx: Queryable, cc: CommCareCase, domain: string, uuid: string | null): Promise<string> {
  const p = cc.properties
  const match = matchKeyOf(dateOf(p.dob), p.last_name ?? null, p.first_name ?? null)
  const phone = (text(p.contact_phone_number) ?? text(p.phone_home) ?? '').replace(/\D/g, '').replace(/^1(\d{10})$/, '$1')
  const gender = text(p.gender)
  const sex = { male: 'M', female: 'F' }[(gender ?? '').toLowerCase()] ?? (gender ? 'U' : null)
  const [person] = await tx.query(
    `INSERT INTO people (external_id, date_of_birth, match_last, match_first, first_name, middle_name, last_name, sex, phone, address1, city, zip)
     VALUES ($1, $2::date, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) RETURNING id::text`,
    [uuid ?? uuidFrom(`commcare:${domain}:${cc.case_id}`), dateOf(p.dob), match?.last ?? null, match?.first ?? null,
      text(p.first_name), text(p.middle_name), text(p.last_name), sex, phone || null, text(p.address_street),
      text(p.address_city), text(p.address_zip)])
  return person.id
}
