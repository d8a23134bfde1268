/**
 * A data record of an export → the typed values stored in lab_rows, or the reason it cannot be used.
 */
import { COLUMNS, columnIndex, type Version } from './columns.ts'
import { isoDate, parseEclrsDate, zonedText } from './dates.ts'
import type { RawRecord } from './records.ts'

export const LAB_ROW_COLUMNS = [
  'patient_key', 'last_name', 'first_name', 'middle_name', 'date_of_birth', 'sex', 'address1', 'address2', 'city', 'zip',
  'county_fips', 'phone', 'lab_name', 'lab_clia', 'facility_name', 'provider_first', 'provider_last', 'accession_number',
  'collected_at', 'result_created_at', 'observed_at', 'analysed_at', 'patient_updated_at', 'test_code', 'test_description',
  'loinc_code', 'loinc_description', 'result_text', 'result_short', 'result_status', 'snomed_code', 'specimen_source',
  'message_key', 'result_positive',
] as const

// Which export column fills each text column of lab_rows.
const TEXT: Record<string, string> = {
  patient_key: 'PIDPATIENTKEY', last_name: 'PIDLASTNAME', first_name: 'PIDFIRSTNAME', middle_name: 'PIDMIDDLENAME',
  sex: 'PIDSEXCODE', address1: 'PIDADDRESSLINE1', address2: 'PIDADDRESSLINE2', city: 'PIDCITY', zip: 'PIDZIPCODE',
  phone: 'PIDHOMEPHONE', lab_name: 'MSHSENDINGFACILITYNAME', lab_clia: 'MSHSENDINGFACILITYCLIA',
  facility_name: 'ZLRFACILITYNAME', provider_first: 'OBRPROVIDERFIRSTNAME', provider_last: 'OBRPROVIDERLASTNAME',
  accession_number: 'OBRACCESSIONNUM', test_code: 'OBXLOCALTESTCODE', test_description: 'OBXLOCALTESTDESC',
  loinc_code: 'OBXLOINCCODE', loinc_description: 'OBXLOINCDESC', result_text: 'OBXOBSERVATIONRESULTTEXT',
  result_short: 'OBXOBSERVATIONRESULTTEXTSHORT', result_status: 'OBXRESULTSTATUSCODE', snomed_code: 'OBXSNOMEDCODE',
  specimen_source: 'OBRSPECIMENSOURCENAME', message_key: 'MSHMESSAGEMASTERKEY', result_positive: 'RESULTPOSITIVE',
}
const TIMESTAMPS: Record<string, string> = {
  collected_at: 'OBRCOLLECTIONDATE', result_created_at: 'OBRCREATEDATE', observed_at: 'OBXOBSERVATIONDATE',
  analysed_at: 'OBXANALYSISDATE', patient_updated_at: 'PIDUPDATEDATE',
}

// Reasons name the column, never its value: they reach terminals and reports, and values may be PII.
export type Typed = { ok: true; countyFips: number; values: unknown[] } | { ok: false; countyFips: number | null; reason: string }

const COUNTY = columnIndex(1).PIDCOUNTYCODE // the same position in every version
const PIPE = 124
const QUOTE = 34

/** The county of a record, when its FIPS field holds a number; used for per-county totals even of errors. */
export function countyOf(record: Pick<RawRecord, 'bytes' | 'ends'>): number | null {
  // Read from the bytes: splitting the whole row just for this would cost more than the rest of a seen row.
  const { bytes } = record
  let start = 0
  let end: number
  if (bytes.indexOf(QUOTE) !== -1) {
    // A quoted field may hold `|`: take the field's bounds from the parser instead of counting.
    const { ends } = record
    if (ends.length <= COUNTY) return null
    start = ends[COUNTY - 1] + 1
    end = ends[COUNTY]
  } else {
    for (let i = 0; i < COUNTY; i++) {
      start = bytes.indexOf(PIPE, start) + 1
      if (start === 0) return null
    }
    end = bytes.indexOf(PIPE, start)
  }
  const text = bytes.toString('latin1', start, end === -1 ? bytes.length : end).trim()
  return /^\d{1,5}$/.test(text) ? Number(text) : null
}

export function typeRow(record: RawRecord, version: Version): Typed {
  const idx = columnIndex(version)
  const fields = record.fields
  const expected = COLUMNS[version].length
  if (fields.length !== expected) {
    return { ok: false, countyFips: null, reason: `has ${fields.length} fields, the v${version} header has ${expected}` }
  }
  const county = countyOf(record)
  const get = (col: string) => {
    const v = fields[idx![col]].trim()
    return v === '' ? null : v
  }
  const countyText = get('PIDCOUNTYCODE')
  if (countyText === null) return { ok: false, countyFips: null, reason: 'no county: PIDCOUNTYCODE is empty' }
  if (county === null) return { ok: false, countyFips: null, reason: 'PIDCOUNTYCODE is not a county FIPS number' }

  const values: Record<string, unknown> = {}
  for (const [col, src] of Object.entries(TEXT)) values[col] = get(src)
  values.county_fips = county
  const dob = get('PIDDATEOFBIRTH')
  if (dob !== null) {
    const t = parseEclrsDate(dob)
    if (!t) return { ok: false, countyFips: county, reason: 'PIDDATEOFBIRTH is not a date like 01MAR1947:00:00:00.000000' }
    values.date_of_birth = isoDate(t)
  } else values.date_of_birth = null
  for (const [col, src] of Object.entries(TIMESTAMPS)) {
    const text = get(src)
    if (text === null) {
      values[col] = null
      continue
    }
    const t = parseEclrsDate(text)
    if (!t) return { ok: false, countyFips: county, reason: `${src} is not a date like 20MAR2020:06:03:36.589000` }
    values[col] = zonedText(t)
  }
  return { ok: true, countyFips: county, values: LAB_ROW_COLUMNS.map((c) => values[c]) }
}
