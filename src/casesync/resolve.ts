/**
 * Where a case's changes must go. Investigators move cases: a transfer to another county
 * (transfer_destination_county_id; the case continues in that county's domain, found there by
 * external_id and transfer_source_case_id) or a duplicate (duplicate_of_case_id). Chains of both
 * can be long, can end nowhere (the last case found is the destination) and can be circular (a
 * cycle is reported, never followed twice).
 */
import type { CommCareCase, CommCareClient } from './client.ts'

export interface Hop {
  domain: string
  caseId: string
}

export type Resolution =
  | { kind: 'absent' } // CommCare has no such case (not posted yet): create it
  | { kind: 'found'; domain: string; commcare: CommCareCase; chain: Hop[]; deadEnd?: string }
  | { kind: 'cycle'; chain: Hop[] }

/** A chain longer than this is treated as a cycle: no county transfers a case a hundred times. */
const MAX_HOPS = 100

export async function resolveDestination(
  client: CommCareClient,
  start: Hop,
  domainOfCounty: (fips: string) => string | undefined,
): Promise<Resolution> {
  const first = await client.getCase(start.domain, start.caseId)
  if (!first) return { kind: 'absent' }
  let here = { domain: start.domain, commcare: first }
  const chain: Hop[] = [start]
  const seen = new Set([`${start.domain}/${start.caseId}`])
  for (;;) {
    const next = await nextHop(client, here, domainOfCounty)
    if ('deadEnd' in next) return { kind: 'found', ...here, chain, deadEnd: next.deadEnd }
    if (!next.hop) return { kind: 'found', ...here, chain }
    const key = `${next.hop.domain}/${next.hop.commcare.case_id}`
    chain.push({ domain: next.hop.domain, caseId: next.hop.commcare.case_id })
    if (seen.has(key) || chain.length > MAX_HOPS) return { kind: 'cycle', chain }
    seen.add(key)
    here = next.hop
  }
}

type Step = { hop: { domain: string; commcare: CommCareCase } | null } | { deadEnd: string }

async function nextHop(
  client: CommCareClient,
  here: { domain: string; commcare: CommCareCase },
  domainOfCounty: (fips: string) => string | undefined,
): Promise<Step> {
  const p = here.commcare.properties
  const toCounty = p.transfer_destination_county_id?.trim()
  if (toCounty) {
    const domain = domainOfCounty(toCounty)
    if (!domain) return { deadEnd: `transfer to county ${toCounty}, which has no domain` }
    const externalId = p.external_id?.trim()
    if (!externalId) return { deadEnd: 'transferred case has no external_id' }
    const found = (await client.findByExternalId(domain, externalId))
      .find((c) => c.properties.transfer_source_case_id === here.commcare.case_id)
    if (!found) return { deadEnd: `no case in ${domain} came from this transfer` }
    // The search answer holds no child cases; the destination's lab results are needed.
    const full = await client.getCase(domain, found.case_id)
    return full ? { hop: { domain, commcare: full } } : { deadEnd: `case vanished from ${domain}` }
  }
  const duplicateOf = p.duplicate_of_case_id?.trim()
  if (duplicateOf) {
    const full = await client.getCase(here.domain, duplicateOf)
    return full ? { hop: { domain: here.domain, commcare: full } } : { deadEnd: 'duplicate_of_case_id names no case' }
  }
  return { hop: null }
}
