/**
 * A claimed lab row, read back from its stored form (lab_rows.raw) with the same code that typed it
 * at ingest, plus what linking needs: the person's keys, the county, the test date, positivity.
 */
import { COLUMNS, columnIndex, type Version } from '../ingest/eclrs/columns.ts'
import { recordOf } from '../ingest/eclrs/records.ts'
import { LAB_ROW_COLUMNS, typeRow } from '../ingest/eclrs/row.ts'

export interface LinkRow {
  id: number
  version: Version
  /** Export columns by name, trimmed; absent from this row's version → ''. */
  field: (column: string) => string
  /** Typed as in lab_rows; timestamps as New York wall time with offset (`2020-03-20 06:03:36.589000-04:00`). */
  typed: Record<(typeof LAB_ROW_COLUMNS)[number], string | number | null>
  patientKey: string | null
  /** Rule (b)'s key, when the row has all three parts. */
  match: { dob: string; last: string; first: string } | null
  countyFips: number
  accession: string | null
  phone: string | null
  /** New York date of collection, else of the report: what the 90-day rule compares. */
  testedOn: string | null
  positive: boolean
  /** The day the row reached Herald (case_import_date). */
  importedOn: string
}

export interface StoredRow {
  id: number
  version: number
  raw: string
  imported_on: string
}

const indexes = new Map<Version, Record<string, number>>()

/** Rule (b)'s name parts: upper case; the first name's first word ("Mary Ann" → "MARY"). */
export function matchName(last: string | null, first: string | null): { last: string; first: string } | null {
  const l = last?.trim().toUpperCase()
  const f = first?.trim().split(/\s+/)[0]?.toUpperCase()
  return l && f ? { last: l, first: f } : null
}

/** Digits of a phone number as labs send them ("(555) 123-4567", "555.123.4567"); US numbers without the 1. */
export function phoneDigits(text: string | null): string | null {
  if (!text) return null
  let digits = text.replace(/\D/g, '')
  if (digits.length === 11 && digits.startsWith('1')) digits = digits.slice(1)
  return digits.length >= 7 ? digits : null
}

/** positive / negative / inconclusive / invalid / unknown / other, from the result text (CommCare's lab_result). */
export function resultKind(text: string): string {
  return /positive|negative|inconclusive|invalid|unknown/i.exec(text)?.[0].toLowerCase() ?? 'other'
}

export function readRow(stored: StoredRow): LinkRow {
  const version = stored.version as Version
  const record = recordOf(stored.raw, 0)
  const typed = typeRow(record, version)
  // Ingest stored only rows that typed cleanly; this can fail only if a stored row was altered.
  if (!typed.ok) throw new Error(`lab row ${stored.id} no longer reads as a v${version} row: ${typed.reason}`)
  let idx = indexes.get(version)
  if (!idx) indexes.set(version, (idx = columnIndex(version)))
  const fields = record.fields
  const at = idx
  const field = (c: string) => (at[c] === undefined ? '' : fields[at[c]].trim())
  const t = Object.fromEntries(LAB_ROW_COLUMNS.map((c, i) => [c, typed.values[i]])) as LinkRow['typed']
  const dob = t.date_of_birth as string | null
  const names = matchName(t.last_name as string | null, t.first_name as string | null)
  const tested = (t.collected_at ?? t.result_created_at) as string | null
  const flag = field('RESULTPOSITIVE').toUpperCase()
  return {
    id: stored.id,
    version,
    field,
    typed: t,
    patientKey: t.patient_key as string | null,
    match: dob && names ? { dob, ...names } : null,
    countyFips: t.county_fips as number,
    accession: t.accession_number as string | null,
    phone: phoneDigits(t.phone as string | null),
    testedOn: tested ? tested.slice(0, 10) : null,
    positive: flag ? flag.startsWith('POS') : resultKind(field('OBXOBSERVATIONRESULTTEXT')) === 'positive',
    importedOn: stored.imported_on,
  }
}

/** Every column of the row's version, for `herald trace`. */
export function columnsOf(row: LinkRow): Record<string, string> {
  return Object.fromEntries(COLUMNS[row.version].map((c) => [c, row.field(c)]))
}
