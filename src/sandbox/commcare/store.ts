/**
 * The sandbox's cases, kept in memory the way CommCare HQ keeps them: one record per case_id across
 * every domain (project space), a server clock that never repeats, and the JSON shape of the case API.
 * The investigator actions (edit, transfer, duplicate, create) live here too, so the HTTP admin routes
 * and the test API share one set of rules.
 */
import { randomUUID } from 'node:crypto'

export interface SandboxCase {
  case_id: string
  domain: string
  case_type: string
  closed: boolean
  date_closed: string | null
  properties: Record<string, string | null>
  indices: Record<string, { case_id: string; case_type: string; relationship: 'child' | 'extension' }>
  opened_by: string
  user_id: string
  date_modified: string
  server_date_modified: string
  server_date_opened: string
  xform_ids: string[]
  /** The case API leaves `closed` out of this case's JSON, as some of New York's recorded answers do. */
  omitClosed?: boolean
}

export class SandboxError extends Error {
  constructor(message: string, readonly status = 404) {
    super(message)
    this.name = 'SandboxError'
  }
}

export const INVESTIGATOR = 'investigator'

/** ISO 8601 with microseconds and Z, the way CommCare writes server times. */
export function isoMicros(us: number): string {
  const ms = Math.floor(us / 1000)
  return new Date(ms).toISOString().replace('Z', String(us - ms * 1000).padStart(3, '0') + 'Z')
}

/** Parses an ISO timestamp (or a date) to microseconds since the epoch; no zone means UTC, as CommCare reads it. */
export function parseMicros(text: string): number | undefined {
  const m = /^(\d{4}-\d{2}-\d{2})(?:[T ](\d{2}:\d{2}(?::\d{2})?)(?:\.(\d{1,9}))?)?(Z|[+-]\d{2}:?\d{2})?$/.exec(text.trim())
  if (!m) return undefined
  const zone = !m[4] || m[4] === 'Z' ? 'Z' : m[4].replace(/^([+-]\d{2})(\d{2})$/, '$1:$2')
  const ms = Date.parse(`${m[1]}T${m[2] ?? '00:00'}${zone}`)
  if (Number.isNaN(ms)) return undefined
  return ms * 1000 + Number((m[3] ?? '').padEnd(6, '0').slice(0, 6))
}

export interface CaseListFilter {
  domain: string
  type?: string
  externalId?: string
  ownerId?: string
  closed?: boolean
  modifiedStart?: number // µs, inclusive
  modifiedEnd?: number // µs, inclusive
}

export class CaseStore {
  // Keyed by case_id alone: CommCare's case ids are global, which is why a form touching a case of
  // another domain is refused rather than creating a second case with the same id.
  private readonly byId = new Map<string, SandboxCase>()
  /** Parent case_id → the cases indexed to it: a GET with child cases must not scan the store. */
  private readonly childIds = new Map<string, Set<string>>()
  private lastMicros = 0

  /**
   * @param county finds a county's domain (and the location that owns its cases) by FIPS, for transfers
   * @param onChange called with each patient case after it changed (the case forwarder listens here)
   */
  constructor(
    private readonly county: (fips: number) => { domain: string; ownerId?: string } | undefined,
    private readonly onChange: (c: SandboxCase) => void = () => {},
  ) {}

  /** The server clock: strictly increasing, so server_date_modified orders every change, even two in one millisecond. */
  stamp(): string {
    this.lastMicros = Math.max(Date.now() * 1000, this.lastMicros + 1)
    return isoMicros(this.lastMicros)
  }

  /** The stored record itself (callers inside the sandbox mutate it); outside callers get copies. */
  raw(caseId: string): SandboxCase | undefined {
    return this.byId.get(caseId)
  }

  put(c: SandboxCase): void {
    this.byId.set(c.case_id, c)
  }

  changed(c: SandboxCase): void {
    if (c.case_type === 'patient') this.onChange(structuredClone(c))
  }

  get(domain: string, caseId: string): SandboxCase | undefined {
    const c = this.byId.get(caseId)
    return c && c.domain === domain ? c : undefined
  }

  all(domain?: string): SandboxCase[] {
    return sorted([...this.byId.values()].filter((c) => domain === undefined || c.domain === domain))
  }

  /** Sets (or, with no ref, removes) one of a case's indices, keeping the child lookup current. */
  setIndex(c: SandboxCase, name: string, ref: SandboxCase['indices'][string] | undefined): void {
    const old = c.indices[name]
    if (old) this.childIds.get(old.case_id)?.delete(c.case_id)
    if (ref) {
      c.indices[name] = ref
      const set = this.childIds.get(ref.case_id) ?? new Set<string>()
      this.childIds.set(ref.case_id, set.add(c.case_id))
    } else delete c.indices[name]
  }

  /** Cases whose indices point at this one (CommCare's child_cases, extensions included). */
  children(c: SandboxCase): SandboxCase[] {
    const kids = [...(this.childIds.get(c.case_id) ?? [])].map((id) => this.byId.get(id)!)
    return sorted(kids.filter((o) => o.domain === c.domain && Object.values(o.indices).some((i) => i.case_id === c.case_id)))
  }

  list(f: CaseListFilter): SandboxCase[] {
    return this.all(f.domain).filter((c) =>
      (f.type === undefined || c.case_type === f.type) &&
      (f.externalId === undefined || c.properties.external_id === f.externalId) &&
      (f.ownerId === undefined || c.properties.owner_id === f.ownerId) &&
      (f.closed === undefined || c.closed === f.closed) &&
      (f.modifiedStart === undefined || parseMicros(c.server_date_modified)! >= f.modifiedStart) &&
      (f.modifiedEnd === undefined || parseMicros(c.server_date_modified)! <= f.modifiedEnd))
  }

  /** A new case record, not yet stored; properties get the keys CommCare always has. */
  newCase(domain: string, caseId: string, caseType: string, userId: string, props: Record<string, string | null>, dateModified?: string): SandboxCase {
    const now = this.stamp()
    const modified = dateModified ?? now
    return {
      case_id: caseId, domain, case_type: caseType, closed: false, date_closed: null,
      properties: { case_name: '', external_id: null, owner_id: userId, date_opened: modified, ...props, case_type: caseType },
      indices: {}, opened_by: userId, user_id: userId, date_modified: modified,
      server_date_modified: now, server_date_opened: now, xform_ids: [],
    }
  }

  /** An investigator's edit: merge properties, maybe close or reopen, as one form would. */
  edit(domain: string, caseId: string, properties: Record<string, string>, opts: { closed?: boolean } = {}): SandboxCase {
    const c = this.get(domain, caseId)
    if (!c) throw new SandboxError(`no case ${caseId} in domain ${domain}`)
    Object.assign(c.properties, properties)
    if (typeof properties.case_type === 'string') c.case_type = properties.case_type
    const now = this.stamp()
    if (opts.closed !== undefined && opts.closed !== c.closed) {
      c.closed = opts.closed
      c.date_closed = opts.closed ? now : null
    }
    Object.assign(c, { user_id: INVESTIGATOR, date_modified: now, server_date_modified: now })
    c.xform_ids.push(randomUUID())
    this.changed(c)
    return structuredClone(c)
  }

  /**
   * A transfer as CommCare records it: the origin names the destination county and is closed, and
   * (unless this is to be a dead end) a copy of the case opens in that county's domain, pointing back
   * (unless linkSource is false: copies made by hand in New York's spaces lack transfer_source_case_id).
   * A transfer to the case's own county only names it (seen in New York's data): no copy, still open.
   */
  transfer(domain: string, caseId: string, toFips: number, opts: { createDestination?: boolean; linkSource?: boolean } = {}): SandboxCase | undefined {
    const origin = this.get(domain, caseId)
    if (!origin) throw new SandboxError(`no case ${caseId} in domain ${domain}`)
    if (this.county(toFips)?.domain === domain) return this.edit(domain, caseId, { transfer_destination_county_id: String(toFips) })
    const create = opts.createDestination ?? true
    const to = create ? this.county(toFips) : undefined
    if (create && !to) throw new SandboxError(`county ${toFips} has no domain in the county list`, 400)
    const copied = { ...origin.properties }
    this.edit(domain, caseId, { transfer_destination_county_id: String(toFips) }, { closed: true })
    if (!to) return undefined
    const props: Record<string, string | null> = { ...copied, transfer_source_case_id: origin.case_id, owner_id: to.ownerId ?? copied.owner_id ?? INVESTIGATOR }
    // The copy opens today and has not moved on yet, whatever the origin's history said.
    delete props.date_opened
    delete props.transfer_destination_county_id
    if (opts.linkSource === false) delete props.transfer_source_case_id
    const dest = this.newCase(to.domain, randomUUID(), origin.case_type, INVESTIGATOR, props)
    dest.xform_ids.push(randomUUID())
    this.put(dest)
    this.changed(dest)
    return structuredClone(dest)
  }

  /** Sets whether the case API leaves `closed` out of this case's JSON. */
  omitClosed(domain: string, caseId: string, omit = true): void {
    const c = this.get(domain, caseId)
    if (!c) throw new SandboxError(`no case ${caseId} in domain ${domain}`)
    c.omitClosed = omit
  }

  /** A case deleted in CommCare (its forms archived), with the cases indexed to it: the case API answers 404 for them. */
  delete(domain: string, caseId: string): void {
    const c = this.get(domain, caseId)
    if (!c) throw new SandboxError(`no case ${caseId} in domain ${domain}`)
    for (const gone of [...this.children(c), c]) {
      for (const name of Object.keys(gone.indices)) this.setIndex(gone, name, undefined)
      this.byId.delete(gone.case_id)
    }
    this.childIds.delete(caseId)
  }

  /** A duplicate as an investigator marks it; the other case need not exist (a dead end). */
  markDuplicate(domain: string, caseId: string, ofCaseId: string): SandboxCase {
    return this.edit(domain, caseId, { duplicate_of_case_id: ofCaseId })
  }

  /** A patient case an investigator opened by hand, with lab_result child cases under it (as New York's spaces hold them). */
  create(domain: string, properties: Record<string, string>, labResults: Record<string, string>[] = [], opts: { modifiedAt?: string } = {}): SandboxCase {
    // `modifiedAt` backdates the case (a case opened before a first poll's start): the server clock is real time.
    const at = opts.modifiedAt === undefined ? undefined : parseMicros(opts.modifiedAt)
    if (opts.modifiedAt !== undefined && at === undefined) throw new SandboxError('modifiedAt must be an ISO 8601 time', 400)
    const backdate = (c: SandboxCase) => {
      if (at !== undefined) Object.assign(c, { date_modified: isoMicros(at), server_date_modified: isoMicros(at), server_date_opened: isoMicros(at) })
      return c
    }
    const patient = backdate(this.newCase(domain, randomUUID(), properties.case_type ?? 'patient', INVESTIGATOR, properties))
    patient.xform_ids.push(randomUUID())
    this.put(patient)
    for (const props of labResults) {
      const lab = backdate(this.newCase(domain, randomUUID(), props.case_type ?? 'lab_result', INVESTIGATOR, props))
      this.setIndex(lab, 'parent', { case_id: patient.case_id, case_type: patient.case_type, relationship: 'child' })
      lab.xform_ids.push(patient.xform_ids[0])
      this.put(lab)
    }
    this.changed(patient)
    return structuredClone(patient)
  }
}

// Every server_date_modified comes from stamp() in one fixed-width format, so text order is time order.
function sorted(cases: SandboxCase[]): SandboxCase[] {
  return cases.sort((a, b) =>
    a.server_date_modified < b.server_date_modified ? -1 : a.server_date_modified > b.server_date_modified ? 1
      : a.case_id < b.case_id ? -1 : a.case_id > b.case_id ? 1 : 0)
}

/**
 * The case API's JSON for one case, keys in CommCare's order (properties sorted, as it sorts them);
 * children (child_cases__full) are given one level deep, as CommCare does.
 */
export function caseJson(c: SandboxCase, children?: SandboxCase[]): Record<string, unknown> {
  return {
    case_id: c.case_id,
    ...(children ? { child_cases: Object.fromEntries(children.map((k) => [k.case_id, caseJson(k, [])])) } : {}),
    ...(c.omitClosed ? {} : { closed: c.closed }),
    date_closed: c.date_closed,
    date_modified: c.date_modified,
    domain: c.domain,
    id: c.case_id,
    indexed_on: c.server_date_modified.replace(/Z$/, ''),
    indices: structuredClone(c.indices),
    opened_by: c.opened_by,
    properties: Object.fromEntries(Object.entries(c.properties).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))),
    resource_uri: '',
    server_date_modified: c.server_date_modified,
    server_date_opened: c.server_date_opened,
    user_id: c.user_id,
    xform_ids: [...c.xform_ids],
  }
}
