/**
 * The link rules, on records held in memory: batch.ts loads every record a batch can touch, these
 * functions decide row by row (a later row sees what an earlier one created or changed), and
 * batch.ts writes the outcome. No I/O here, so the rules read as rules.
 */
import type { County, CountyTable } from './counties.ts'
import {
  addMissing, caseProps, DERIVED, labResultProps, PERSON_FIELDS, personFields, withDerived,
  type Merge, type PersonFields, type Props,
} from './data.ts'
import { matchKeyText as matchKey, personKeys, uuidFrom } from './keys.ts'
import type { LinkRow } from './row.ts'

export interface PersonRec {
  id?: number // undefined until a new person's id is taken from the sequence
  isNew: boolean
  /** The id CommCare knows the person by (external_id, doh_mpi_id), the same in every county. */
  externalId: string
  /** A new person's match key, written with it (never read back: it does not change). */
  match: LinkRow['match']
  fields: PersonFields
  changed: boolean
}

export interface CaseRec {
  id?: number
  isNew: boolean
  person: PersonRec
  countyFips: number
  caseId: string
  data: Props
  closed: boolean
  openedOn: string
  activityEndedOn: string | null
  reinfectionOf: CaseRec | null
  /**
   * Where its later results go (index_cases.moved_to): case sync set it when the case was redirected
   * to, or adopted into, the case at the end of a transfer or duplicate chain, maybe in another county.
   * A case that moved takes no new result. Null when it has not moved, or that case is not loaded.
   */
  movedTo: CaseRec | null
  /** Its own columns changed: the row is written. */
  changed: boolean
  /** It, or one of its results, changed: case sync must post it. */
  sync: boolean
  results: Map<string, ResultRec> // by accession number: those loaded or created
}

export interface ResultRec {
  id?: number
  isNew: boolean
  indexCase: CaseRec
  accession: string
  labRowId: number
  positive: boolean
  testedOn: string | null
  data: Props
  changed: boolean
}

export type EventKind =
  | 'person_matched' | 'person_created' | 'patient_key_added' | 'person_updated' | 'county_unknown' | 'ignored'
  | 'case_created' | 'case_reactivated' | 'case_reinfection' | 'case_updated'
  | 'lab_result_created' | 'lab_result_updated' | 'no_new_information'

export interface LinkEvent {
  row: number
  kind: EventKind
  person?: PersonRec
  indexCase?: CaseRec
  result?: ResultRec
  detail?: Record<string, unknown>
}

export interface Change {
  row: number
  target: 'person' | 'index_case' | 'lab_result'
  record: PersonRec | CaseRec | ResultRec
  applied: Record<string, string>
  dropped: Record<string, string>
}

/** Everything a batch has loaded or created, and what it decided. */
export class LinkState {
  /** patient key → person (loaded, or new in this batch). */
  readonly keyOwner = new Map<string, PersonRec>()
  /** rule (b) key → person. */
  readonly byMatch = new Map<string, PersonRec>()
  readonly people = new Map<number, PersonRec>()
  readonly cases = new Map<PersonRec, CaseRec[]>()
  readonly newPeople: PersonRec[] = []
  readonly newKeys: { key: string; person: PersonRec; row: number }[] = []
  readonly newCases: CaseRec[] = []
  readonly newResults: ResultRec[] = []
  readonly events: LinkEvent[] = []
  readonly changes: Change[] = []
  readonly exposures: ResultRec[] = []

  existingPerson(id: number): PersonRec {
    let p = this.people.get(id)
    if (!p) {
      p = { id, isNew: false, externalId: '', match: null, fields: emptyFields(), changed: false }
      this.people.set(id, p)
    }
    return p
  }
}

const emptyFields = () => Object.fromEntries(PERSON_FIELDS.map((f) => [f, null])) as PersonFields

/** Keys a batch must hold before it looks a row's person up: two workers never decide about one key at once. */
export const lockKeys = (r: LinkRow) => personKeys(r.patientKey, r.match)

export interface Plan {
  row: LinkRow
  county: County
  person: PersonRec
  /** The row created the person or gave it a patient key. */
  personChanged: boolean
}

export type Outcome = 'linked' | 'no_new_information' | 'ignored'

// A case in one of these states is not where a new result goes (Viaduct's rules).
const CLOSED_DISPOSITIONS = new Set(['registered_in_error', 'duplicate', 'not_a_case'])
const TRANSFER_UNDER_WAY = new Set(['pending', 'sent'])
const REINFECTION_DAYS = 90
// Person properties an investigator may have corrected on the earlier case: a reinfection case starts from them.
const CARRIED_TO_REINFECTION = [
  'first_name', 'last_name', 'full_name', 'name', 'initials', 'name_and_id', 'preferred_name', 'dob', 'contact_phone_number',
  'phone_home', 'phone_work', 'address', 'address_street', 'address_city', 'address_state', 'address_zip', 'address_county',
  'gender', 'gender_other', 'race', 'race_specify', 'ethnicity',
]

/** Step one: county and person for each row, in row order. Rows ignored here get their event and outcome. */
export function planRows(rows: LinkRow[], counties: CountyTable, state: LinkState, outcomes: Map<number, Outcome>): Plan[] {
  const plans: Plan[] = []
  const ignore = (row: LinkRow, reason: string, detail: Record<string, unknown> = {}) => {
    state.events.push({ row: row.id, kind: 'ignored', detail: { reason, ...detail } })
    outcomes.set(row.id, 'ignored')
  }
  for (const row of rows) {
    let county = counties.byFips.get(row.countyFips)
    if (county && !county.participating) {
      ignore(row, 'county does not participate', { fips: row.countyFips, county: county.display })
      continue
    }
    if (!row.accession) {
      ignore(row, 'no accession number (OBRACCESSIONNUM is empty)')
      continue
    }
    if (!row.patientKey && !row.match) {
      ignore(row, 'cannot identify the person: no patient key, and no date of birth, last name and first name')
      continue
    }
    if (!county) {
      if (!counties.state) {
        ignore(row, 'county is not in the county list, and the list has no state domain', { fips: row.countyFips })
        continue
      }
      county = counties.state
      state.events.push({ row: row.id, kind: 'county_unknown', detail: { fips: row.countyFips, domain: county.domain } })
    }
    const { person, changed } = findPerson(row, state)
    plans.push({ row, county, person, personChanged: changed })
  }
  return plans
}

/** (a) by patient key; (b) by date of birth and names, adding the key; (c) a new person. */
function findPerson(row: LinkRow, state: LinkState): { person: PersonRec; changed: boolean } {
  const byKey = row.patientKey ? state.keyOwner.get(row.patientKey) : undefined
  if (byKey) {
    state.events.push({ row: row.id, kind: 'person_matched', person: byKey, detail: { by: 'patient_key' } })
    return { person: byKey, changed: false }
  }
  const byMatch = row.match ? state.byMatch.get(matchKey(row.match)) : undefined
  if (byMatch) {
    state.events.push({ row: row.id, kind: 'person_matched', person: byMatch, detail: { by: 'date_of_birth_and_name' } })
    if (row.patientKey) addKey(state, row, byMatch)
    return { person: byMatch, changed: Boolean(row.patientKey) }
  }
  const person: PersonRec = { isNew: true, externalId: uuidFrom(`person:${row.id}`), match: row.match, fields: personFields(row), changed: true }
  state.newPeople.push(person)
  if (row.match) state.byMatch.set(matchKey(row.match), person)
  state.events.push({ row: row.id, kind: 'person_created', person, detail: { keyed: Boolean(row.patientKey), matchable: Boolean(row.match) } })
  if (row.patientKey) addKey(state, row, person, false)
  return { person, changed: true }
}

function addKey(state: LinkState, row: LinkRow, person: PersonRec, withEvent = true) {
  state.keyOwner.set(row.patientKey!, person)
  state.newKeys.push({ key: row.patientKey!, person, row: row.id })
  if (withEvent) state.events.push({ row: row.id, kind: 'patient_key_added', person })
}

/** Days from one ISO date to another. */
const days = (from: string, to: string) => Math.round((Date.parse(to) - Date.parse(from)) / 86_400_000)

/** Whether a new result may go to this case: not followed by a reinfection case, not void, not being transferred. */
function eligible(c: CaseRec, all: CaseRec[]): boolean {
  if (c.data.reinfected_case_created === 'yes' || all.some((o) => o.reinfectionOf === c)) return false
  return !CLOSED_DISPOSITIONS.has(c.data.final_disposition ?? '') && !TRANSFER_UNDER_WAY.has(c.data.transfer_status ?? '')
}

/** Where a case's new results go: the end of its moved_to chain, or the case itself (a loop stops where it closes). */
export function current(c: CaseRec): CaseRec {
  const seen = new Set<CaseRec>()
  let at = c
  while (at.movedTo && !seen.has(at)) {
    seen.add(at)
    at = at.movedTo
  }
  return at
}

const unique = <T>(xs: T[]) => [...new Set(xs)]

/** Step two, once the people are locked and their cases loaded: cases, lab results, changes. */
export function decideCases(plans: Plan[], state: LinkState, outcomes: Map<number, Outcome>) {
  for (const plan of plans) {
    const before = state.events.length
    decideRow(plan, state)
    if (state.events.length === before && !plan.personChanged) {
      state.events.push({ row: plan.row.id, kind: 'no_new_information', person: plan.person })
      outcomes.set(plan.row.id, 'no_new_information')
    } else outcomes.set(plan.row.id, 'linked')
  }
}

function decideRow({ row, county, person }: Plan, state: LinkState) {
  // The person: fill in what is missing (nothing, for the row that created it).
  const merged = addMissing(person.fields, personFields(row))
  if (Object.keys(merged.applied).length > 0) {
    person.fields = merged.value
    person.changed = true
    state.events.push({ row: row.id, kind: 'person_updated', person, detail: { fields: Object.keys(merged.applied) } })
  }
  logChange(state, row, 'person', person, merged)

  const all = state.cases.get(person) ?? []
  const inCounty = all.filter((c) => c.countyFips === county.fips)
  // A case that moved takes nothing new: its place is the case it moved to (current), wherever that is.
  // The cases a row's result went to through a move, for the events: by the case it went to.
  const movedFrom = new Map<CaseRec, string[]>()
  for (const c of inCounty) if (current(c) !== c) movedFrom.set(current(c), [...(movedFrom.get(current(c)) ?? []), c.caseId])
  // A result already on a case stays there, whatever has become of the case since: it is updated, not
  // added again. On a case that moved, "there" is where it moved (adoption copied its results): one
  // result is never updated, nor posted, on both.
  const accession = row.accession!
  const holding = unique(inCounty.filter((c) => c.results.has(accession) || current(c).results.has(accession)).map(current))
  const candidates = holding.length > 0 ? [] : unique(inCounty.map(current)).filter((c) => eligible(c, all))

  const targets: CaseRec[] = [...holding]
  const ended: CaseRec[] = []
  for (const c of candidates) {
    if (c.closed && c.activityEndedOn && row.testedOn && c.activityEndedOn < row.testedOn) {
      const since = days(c.openedOn, row.testedOn)
      if (since < REINFECTION_DAYS) {
        c.closed = false
        c.activityEndedOn = null
        c.data = { ...c.data, reactivated_case: 'yes' }
        c.changed = c.sync = true
        state.events.push({ row: row.id, kind: 'case_reactivated', person, indexCase: c, detail: { days_since_opened: since } })
        targets.push(c)
      } else ended.push(c)
    } else targets.push(c)
  }

  const props = caseProps(row, person.externalId, county)
  const created: CaseRec[] = []
  if (targets.length === 0) {
    // No case for this infection: a new one, following the latest ended one if this is a reinfection.
    const previous = ended.sort((a, b) => b.openedOn.localeCompare(a.openedOn))[0]
    let data = props
    if (previous) {
      const carried = Object.fromEntries(CARRIED_TO_REINFECTION.filter((k) => previous.data[k]).map((k) => [k, previous.data[k]]))
      data = { ...props, ...carried, reinfected_case: 'yes', archived_case_id: previous.caseId }
      previous.data = { ...previous.data, reinfected_case_created: 'yes' }
      previous.changed = previous.sync = true
    }
    const c: CaseRec = {
      isNew: true, person, countyFips: county.fips, caseId: uuidFrom(`index_case:${row.id}:${county.fips}`), data: withDerived(data),
      closed: false, openedOn: row.testedOn ?? row.importedOn, activityEndedOn: null, reinfectionOf: previous ?? null, movedTo: null,
      changed: true, sync: true, results: new Map(),
    }
    state.newCases.push(c)
    state.cases.set(person, [...all, c])
    created.push(c)
    state.events.push(previous
      ? { row: row.id, kind: 'case_reinfection', person, indexCase: c, detail: { previous_case: previous.caseId, days_since_opened: days(previous.openedOn, row.testedOn!) } }
      : { row: row.id, kind: 'case_created', person, indexCase: c, detail: { county: county.fips, domain: county.domain } })
  }

  for (const c of targets) {
    const merged = addMissing(c.data, props, DERIVED)
    const data = withDerived(merged.value)
    if (Object.keys(merged.applied).length > 0) {
      c.data = data
      c.changed = c.sync = true
      state.events.push({ row: row.id, kind: 'case_updated', person, indexCase: c, detail: { fields: Object.keys(merged.applied), ...moved(movedFrom, c) } })
    }
    logChange(state, row, 'index_case', c, merged)
  }

  for (const c of created) linkResult(row, county, person, c, state, true, {})
  for (const c of targets) linkResult(row, county, person, c, state, false, moved(movedFrom, c))
}

/** The detail an event on a case gets when the row's result went to it because other cases moved there. */
function moved(movedFrom: Map<CaseRec, string[]>, c: CaseRec): { moved_from?: string[] } {
  const from = movedFrom.get(c)
  return from ? { moved_from: from } : {}
}

function linkResult(row: LinkRow, county: County, person: PersonRec, c: CaseRec, state: LinkState, caseIsNew: boolean,
  via: { moved_from?: string[] }) {
  const props = labResultProps(row, person.externalId, county)
  const existing = c.results.get(row.accession!)
  if (existing) {
    const merged = addMissing(existing.data, props)
    if (Object.keys(merged.applied).length > 0) {
      existing.data = merged.value
      existing.changed = true
      c.sync = true // the lab result travels with its case
      state.events.push({ row: row.id, kind: 'lab_result_updated', person, indexCase: c, result: existing, detail: { fields: Object.keys(merged.applied), ...via } })
    }
    logChange(state, row, 'lab_result', existing, merged)
    return
  }
  const result: ResultRec = {
    isNew: true, indexCase: c, accession: row.accession!, labRowId: row.id, positive: row.positive, testedOn: row.testedOn,
    data: props, changed: true,
  }
  c.results.set(row.accession!, result)
  state.newResults.push(result)
  if (!caseIsNew && c.data.new_lab_result_received !== 'yes') {
    // A signal to CommCare's workflows, raised by Herald on every later result: not an investigator's value.
    c.data = { ...c.data, new_lab_result_received: 'yes' }
    c.changed = true
  }
  c.sync = true
  state.events.push({ row: row.id, kind: 'lab_result_created', person, indexCase: c, result, ...(via.moved_from ? { detail: via } : {}) })
  // Marked in exposure_queue, which says so (and when): no event of its own.
  if (row.positive && person.fields.phone) state.exposures.push(result)
}

/** The change log keeps every update that added or dropped anything. */
function logChange(state: LinkState, row: LinkRow, target: Change['target'], record: Change['record'], m: Merge<unknown>) {
  if (Object.keys(m.applied).length > 0 || Object.keys(m.dropped).length > 0) {
    state.changes.push({ row: row.id, target, record, applied: m.applied, dropped: m.dropped })
  }
}
