/**
 * Where a case's changes must go. Investigators move cases: a transfer to another county
 * (transfer_destination_county_id; the case continues in that county's domain) or a duplicate
 * (duplicate_of_case_id). Chains of both can be long and can be circular (a cycle is reported, never
 * followed twice). At each transfer the destination is looked for, in this order (as New York's
 * Viaduct did):
 *   1. CommCare's search by external_id in the destination's domain, for the case whose
 *      transfer_source_case_id is this one;
 *   2. Herald's own cases whose transfer_source_case_id is this one (pulled from CommCare, where a
 *      search by external_id may miss them: the copy's external_id changed, or it is not yet indexed);
 *   3. else the transfer is unresolved: nothing can be posted until an operator names the case.
 * A transfer to the case's own county is no transfer. A duplicate chain that ends nowhere ends at
 * the last case found.
 */
import type { CommCareCase, CommCareClient } from './client.ts'

export interface Hop {
  domain: string
  caseId: string
}

/** Why a transfer's destination was not found, for the event and the operator. */
export type Unresolved =
  | 'no search result' // CommCare's search by external_id found no case, and Herald knows none
  | 'none from this transfer' // it found cases, none with this transfer_source_case_id, and Herald knows none
  | 'county without a domain' // the destination county has no CommCare domain in the county list
  | 'no external_id' // the transferred case has no external_id to search by, and Herald knows no destination

export type Resolution =
  | { kind: 'absent'; domain: string; caseId: string } // CommCare has no case at the chain's start
  | { kind: 'found'; domain: string; commcare: CommCareCase; chain: Hop[]; deadEnd?: string }
  | { kind: 'cycle'; chain: Hop[] }
  | { kind: 'unresolved'; chain: Hop[]; why: Unresolved; toCounty: string; toDomain?: string; searchResults?: number }

/** Herald's own cases that came from this transfer (step 2), each with its county's domain. */
export type LocalDestinations = (sourceCaseId: string) => Promise<Hop[]>

/** A chain longer than this is treated as a cycle: no county transfers a case a hundred times. */
const MAX_HOPS = 100

export async function resolveDestination(
  client: CommCareClient,
  start: Hop,
  domainOfCounty: (fips: string) => string | undefined,
  localDestinations: LocalDestinations,
): Promise<Resolution> {
  const first = await client.getCase(start.domain, start.caseId)
  if (!first) return { kind: 'absent', ...start }
  let here = { domain: start.domain, commcare: first }
  const chain: Hop[] = [start]
  const seen = new Set([`${start.domain}/${start.caseId}`])
  for (;;) {
    const next = await nextHop(client, here, domainOfCounty, localDestinations)
    if ('unresolved' in next) return { kind: 'unresolved', chain, ...next.unresolved }
    if ('deadEnd' in next) return { kind: 'found', ...here, chain, deadEnd: next.deadEnd }
    if (!next.hop) return { kind: 'found', ...here, chain }
    const key = `${next.hop.domain}/${next.hop.commcare.case_id}`
    chain.push({ domain: next.hop.domain, caseId: next.hop.commcare.case_id })
    if (seen.has(key) || chain.length > MAX_HOPS) return { kind: 'cycle', chain }
    seen.add(key)
    here = next.hop
  }
}

type Here = { domain: string; commcare: CommCareCase }
type Step =
  | { hop: Here | null }
  | { deadEnd: string }
  | { unresolved: { why: Unresolved; toCounty: string; toDomain?: string; searchResults?: number } }

async function nextHop(client: CommCareClient, here: Here, domainOfCounty: (fips: string) => string | undefined, local: LocalDestinations): Promise<Step> {
  const p = here.commcare.properties
  const toCounty = p.transfer_destination_county_id?.trim()
  const domain = toCounty ? domainOfCounty(toCounty) : undefined
  // A case named its own county's destination has not moved (seen in New York's data): follow its duplicates only.
  if (toCounty && domain !== here.domain) {
    const unresolved = (why: Unresolved, searchResults?: number) => ({ unresolved: { why, toCounty, toDomain: domain, searchResults } })
    let searched: number | undefined
    const externalId = p.external_id?.trim()
    if (domain && externalId) {
      const results = await client.findByExternalId(domain, externalId)
      searched = results.length
      const match = results.find((c) => c.properties.transfer_source_case_id === here.commcare.case_id)
      // The search answer holds no child cases; the destination's lab results are needed.
      const full = match && (await client.getCase(domain, match.case_id))
      if (full) return { hop: { domain, commcare: full } }
    }
    for (const hop of await local(here.commcare.case_id)) {
      const full = await client.getCase(hop.domain, hop.caseId)
      if (full) return { hop: { domain: hop.domain, commcare: full } }
    }
    if (!domain) return unresolved('county without a domain')
    if (!externalId) return unresolved('no external_id')
    return unresolved(searched ? 'none from this transfer' : 'no search result', searched)
  }
  const duplicateOf = p.duplicate_of_case_id?.trim()
  if (duplicateOf) {
    const full = await client.getCase(here.domain, duplicateOf)
    return full ? { hop: { domain: here.domain, commcare: full } } : { deadEnd: 'duplicate_of_case_id names no case' }
  }
  return { hop: null }
}
