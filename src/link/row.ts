/**
 * A claimed lab row: the columns ingest typed (timestamps as UTC ISO 8601 text), the other export
 * columns read from its stored form (lab_rows.raw), and what linking needs: the person's keys, the
 * county, the test date, positivity.
 */
import { COLUMNS, columnIndex, type Version } from '../ingest/eclrs/columns.ts'
import { fieldsOf } from '../ingest/eclrs/records.ts'
import { matchKeyOf, type MatchKey } from './keys.ts'

/** The typed lab_rows columns link reads, and how the claim selects each (r = lab_rows). */
const NY_DATE = (c: string) => `to_char(r.${c} AT TIME ZONE 'America/New_York', 'YYYY-MM-DD')`
const UTC_ISO = (c: string) => `to_char(r.${c} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')`
export const TYPED_SELECT: Record<string, string> = {
  patient_key: 'r.patient_key', last_name: 'r.last_name', first_name: 'r.first_name', middle_name: 'r.middle_name',
  date_of_birth: 'r.date_of_birth::text', sex: 'r.sex', address1: 'r.address1', address2: 'r.address2', city: 'r.city',
  zip: 'r.zip', county_fips: 'r.county_fips', phone: 'r.phone', accession_number: 'r.accession_number',
  collected_at: UTC_ISO('collected_at'), result_created_at: UTC_ISO('result_created_at'), analysed_at: UTC_ISO('analysed_at'),
  tested_on: `coalesce(${NY_DATE('collected_at')}, ${NY_DATE('result_created_at')})`, imported_on: NY_DATE('ingested_at'),
}
type Typed = Record<keyof typeof TYPED_SELECT, string | null> & { county_fips: number }

export interface LinkRow {
  id: number
  version: Version
  /** Export columns by name, trimmed; absent from this row's version → ''. */
  field: (column: string) => string
  /** Typed as in lab_rows; timestamps as UTC ISO 8601 text. */
  typed: Typed
  patientKey: string | null
  /** Rule (b)'s key, when the row has all three parts. */
  match: MatchKey | null
  countyFips: number
  accession: string | null
  phone: string | null
  /** New York date of collection, else of the report: what the 90-day rule compares. */
  testedOn: string | null
  positive: boolean
  /** The day the row reached Herald (case_import_date). */
  importedOn: string
}

export type StoredRow = Typed & { id: number; version: number; raw: string }

/** Digits of a phone number as labs send them ("(555) 123-4567", "555.123.4567"); US numbers without the 1. */
function phoneDigits(text: string | null): string | null {
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
  const at = columnIndex(version)
  const fields = fieldsOf(stored.raw)
  // Ingest stored only rows with the header's field count; this fails only for a row altered since.
  if (fields.length !== COLUMNS[version].length) throw new Error(`lab row ${stored.id} no longer has the v${version} field count`)
  const field = (c: string) => (at[c] === undefined ? '' : fields[at[c]].trim())
  const flag = field('RESULTPOSITIVE').toUpperCase()
  return {
    id: stored.id,
    version,
    field,
    typed: stored,
    patientKey: stored.patient_key,
    match: matchKeyOf(stored.date_of_birth, stored.last_name, stored.first_name),
    countyFips: stored.county_fips,
    accession: stored.accession_number,
    phone: phoneDigits(stored.phone),
    testedOn: stored.tested_on,
    positive: flag ? flag.startsWith('POS') : resultKind(field('OBXOBSERVATIONRESULTTEXT')) === 'positive',
    importedOn: stored.imported_on!,
  }
}
