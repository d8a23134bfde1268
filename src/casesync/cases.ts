/**
 * The cases outbound case sync posts, as it reads and moves them: a job's case with its lab results
 * and the operator's answer (loadCases), the destinations Herald itself knows for a transfer, and
 * the adoption of the case at the end of a chain, which becomes the origin's moved_to.
 */
import type { Db, Queryable } from '../db/types.ts'
import { countyOfDomain, type CountyTable } from '../link/counties.ts'
import type { CommCareCase } from './client.ts'
import { insertCaseFrom } from './inbound.ts'
import type { LocalCase } from './payload.ts'
import type { Hop } from './resolve.ts'

/** A case to post, with the operator's answer to where it goes, if any (`herald cases resolve`). */
export interface SyncCase extends LocalCase {
  resolvedTo: Hop | null
}

export async function loadCases(db: Db, ids: string[]): Promise<Map<string, SyncCase>> {
  const rows = await db.query(
    `SELECT c.id::text, c.case_id, c.person_id::text, c.county_fips, co.domain, co.location_id, c.data,
            (c.synced_at IS NOT NULL OR c.commcare_modified_at IS NOT NULL) AS known, c.resolved_to_case_id, c.resolved_to_domain
     FROM index_cases c JOIN counties co ON co.fips = c.county_fips WHERE c.id = ANY($1::bigint[])`, [ids])
  const cases = new Map<string, SyncCase>(rows.map((r) => [r.id, {
    id: r.id, caseId: r.case_id, personId: r.person_id, countyFips: r.county_fips, domain: r.domain,
    locationId: r.location_id, data: r.data, known: r.known, results: [],
    resolvedTo: r.resolved_to_case_id ? { domain: r.resolved_to_domain, caseId: r.resolved_to_case_id } : null,
  }]))
  const results = await db.query(
    `SELECT index_case_id::text, accession_number, data FROM lab_results WHERE index_case_id = ANY($1::bigint[]) ORDER BY id`, [ids])
  for (const r of results) cases.get(r.index_case_id)?.results.push({ accession: r.accession_number, data: r.data })
  return cases
}

/** Step 2 of a transfer's resolution: Herald's own cases that came from it (the index on transfer_source_case_id). */
export async function localDestinations(db: Db, sourceCaseId: string): Promise<Hop[]> {
  const rows = await db.query(
    `SELECT c.case_id, co.domain FROM index_cases c JOIN counties co ON co.fips = c.county_fips
     WHERE c.data ? 'transfer_source_case_id' AND c.data->>'transfer_source_case_id' = $1 AND co.domain IS NOT NULL
     ORDER BY c.id`, [sourceCaseId])
  return rows.map((r) => ({ domain: r.domain, caseId: r.case_id }))
}

/**
 * The case at the end of a transfer or duplicate chain, as a local case: found by its case_id, or
 * created for the same person in the destination's county, with the origin's lab results carried
 * over by accession number. The origin's moved_to names it, in the same transaction, so link sends
 * later results there. Repeatable: a second run finds what the first created.
 */
export async function adoptDestination(db: Db, origin: LocalCase, domain: string, commcare: CommCareCase, counties: CountyTable): Promise<LocalCase> {
  const county = countyOfDomain(counties, domain)
  if (!county) throw new Error(`the chain ends in domain ${domain}, which is no county's`)
  const id = await db.transaction(async (tx) => {
    const dest = await insertCaseFrom(tx, commcare, origin.personId, county.fips)
    await tx.query(
      `INSERT INTO lab_results (index_case_id, accession_number, lab_row_id, positive, tested_on, data)
       SELECT $1, accession_number, lab_row_id, positive, tested_on, data || jsonb_build_object('owner_id', $3::text)
       FROM lab_results WHERE index_case_id = $2
       ON CONFLICT (index_case_id, accession_number) DO NOTHING`, [dest, origin.id, county.locationId ?? ''])
    await setMovedTo(tx, origin.id, dest)
    return dest
  })
  return (await loadCases(db, [id])).get(id)!
}

/**
 * origin.moved_to = the end of dest's own moved_to links (dest itself if it has not moved), and the
 * cases that had moved to the origin move there too: every link stays one hop, so link follows one.
 * The walk never returns to the origin and never loops; the end found takes no moved_to itself
 * (CommCare has just said the chain ends there, which undoes an older move the other way).
 */
async function setMovedTo(tx: Queryable, originId: string, destId: string) {
  const [end] = await tx.query(
    `WITH RECURSIVE walk AS (
       SELECT id, moved_to, ARRAY[id] AS seen FROM index_cases WHERE id = $2
       UNION ALL
       SELECT c.id, c.moved_to, w.seen || c.id FROM walk w JOIN index_cases c ON c.id = w.moved_to
       WHERE c.id <> $1 AND NOT c.id = ANY(w.seen))
     SELECT id::text FROM walk ORDER BY cardinality(seen) DESC LIMIT 1`, [originId, destId])
  await tx.query(
    `UPDATE index_cases SET moved_to = CASE WHEN id = $2 THEN NULL ELSE $2 END
     WHERE id = $1 OR moved_to = $1 OR (id = $2 AND moved_to IS NOT NULL)`, [originId, end.id])
}
