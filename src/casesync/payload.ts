/**
 * What one post carries: the case as Herald holds it, turned into case blocks. A case CommCare has
 * never seen is created whole. A case it has is only given what it lacks: investigators own the
 * values they wrote, so a property CommCare holds is never overwritten, except Herald's own
 * signals to CommCare's workflows. Lab results are matched to the case's lab_result cases by
 * accession number, whether CommCare holds them as child or extension cases (child_cases lists
 * both); a new one gets a case_id derived from its case and accession, so a re-sent form names the
 * same case. Only a new lab_result is indexed: re-indexing an existing one would change its
 * relationship, and a project space whose lab results are child cases must not get extensions.
 */
import { uuidFrom } from '../link/keys.ts'
import type { CommCareCase } from './client.ts'
import type { CaseBlock } from './xform.ts'

export interface LocalCase {
  id: string
  caseId: string
  personId: string
  countyFips: number
  domain: string | null
  locationId: string | null
  data: Record<string, string>
  /** Posted or pulled before: CommCare may hold it, and it may have been moved. */
  known: boolean
  results: { accession: string; data: Record<string, string> }[]
}

/** Properties Herald sets to tell CommCare something happened (decide.ts): sent whenever they differ. */
const SIGNALS = new Set(['new_lab_result_received', 'reactivated_case', 'reinfected_case_created'])

const empty = (v: string | null | undefined) => v === undefined || v === null || v === ''

function missingIn(theirs: Record<string, string | null>, ours: Record<string, string>): Record<string, string> {
  const out: Record<string, string> = {}
  for (const [k, v] of Object.entries(ours)) {
    if (empty(v)) continue
    if (empty(theirs[k]) || (SIGNALS.has(k) && theirs[k] !== v)) out[k] = v
  }
  return out
}

export const labResultCaseId = (patientCaseId: string, accession: string) => uuidFrom(`lab_result:${patientCaseId}:${accession}`)

/** The blocks to post for `c`, given what CommCare holds of it (null: nothing yet). Empty: nothing to send. */
export function caseBlocks(c: LocalCase, commcare: CommCareCase | null): CaseBlock[] {
  const ownerId = c.data.owner_id || c.locationId || ''
  const blocks: CaseBlock[] = []
  const patientProps = commcare ? missingIn(commcare.properties, c.data) : c.data
  if (!commcare || Object.keys(patientProps).length > 0) {
    blocks.push({
      caseId: c.caseId, create: !commcare, caseType: 'patient', ownerId, properties: patientProps,
      caseName: c.data.full_name || c.data.name || c.data.external_id || c.caseId,
    })
  }
  const children = new Map<string, CommCareCase>()
  for (const child of Object.values(commcare?.child_cases ?? {})) {
    const accession = child.properties.accession_number
    if (child.properties.case_type === 'lab_result' && accession) children.set(accession, child)
  }
  for (const r of c.results) {
    const child = children.get(r.accession)
    const properties = child ? missingIn(child.properties, r.data) : r.data
    if (child && Object.keys(properties).length === 0) continue
    blocks.push({
      caseId: child?.case_id ?? labResultCaseId(c.caseId, r.accession), create: !child, caseType: 'lab_result',
      caseName: r.data.name || `lab_result ${r.accession}`, ownerId, properties,
      ...(child ? {} : { parent: { caseId: c.caseId, caseType: 'patient' } }),
    })
  }
  return blocks
}
