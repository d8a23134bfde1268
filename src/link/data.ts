/**
 * What a lab row says about a person, their patient case and their lab result, in CommCare's
 * property names (the patient case and its lab_result child case), and the one rule for folding
 * it into what a record already holds: add what is missing, never overwrite a value.
 */
import type { County } from './counties.ts'
import { resultKind, type LinkRow } from './row.ts'

export type Props = Record<string, string>

/** The person columns a row can fill in (people table). */
export const PERSON_FIELDS = ['first_name', 'middle_name', 'last_name', 'sex', 'phone', 'address1', 'address2', 'city', 'zip'] as const
export type PersonFields = Record<(typeof PERSON_FIELDS)[number], string | null>

export function personFields(row: LinkRow): PersonFields {
  const t = row.typed
  return {
    first_name: t.first_name, middle_name: t.middle_name, last_name: t.last_name, sex: t.sex,
    phone: row.phone, address1: t.address1, address2: t.address2, city: t.city, zip: t.zip,
  }
}

const join = (parts: string[], sep: string) => parts.filter(Boolean).join(sep)

function gender(sex: string): [string, string] {
  const s = sex.toUpperCase()
  if (s === 'M') return ['male', '']
  if (s === 'F') return ['female', '']
  return s ? ['other', sex] : ['', '']
}

/** Keeps only non-empty values: an empty value is "nothing to say", never a value to store. */
function present(props: Record<string, string | null>): Props {
  const out: Props = {}
  for (const k in props) {
    const v = props[k]
    if (v) out[k] = v
  }
  return out
}

/** Patient case properties from one row. Derived properties are added by `withDerived`. */
export function caseProps(row: LinkRow, external: string, county: County): Props {
  const t = row.typed
  const first = t.first_name ?? ''
  const last = t.last_name ?? ''
  const full = join([first, last], ' ')
  const [g, gOther] = gender(t.sex ?? '')
  return present({
    external_id: external,
    doh_mpi_id: external,
    patient_type: row.positive ? 'confirmed' : '',
    first_name: first,
    last_name: last,
    full_name: full,
    name: full,
    // By code point: a name starting outside the basic plane (an emoji) must not give half a surrogate pair, which PostgreSQL refuses.
    initials: first && last ? String.fromCodePoint(first.codePointAt(0)!, last.codePointAt(0)!) : '',
    name_and_id: full ? `${full} (${external})` : '',
    dob: t.date_of_birth ?? '',
    dob_known: t.date_of_birth ? 'yes' : 'no',
    gender: g,
    gender_other: gOther,
    contact_phone_number: row.phone ?? '',
    phone_home: row.phone ?? '',
    address: join([t.address1 ?? '', t.city ?? '', t.zip ?? ''], ', '),
    address_street: t.address1 ?? '',
    address_city: t.city ?? '',
    address_zip: t.zip ?? '',
    address_county: county.name,
    county_commcare_domain: county.domain ?? '',
    county_display: county.display,
    fips: String(county.fips),
    owner_id: county.locationId ?? '',
    analysis_date: t.analysed_at,
    eclrs_create_date: t.result_created_at,
    case_import_date: row.importedOn,
  })
}

/** Properties that describe other properties; recomputed after every merge rather than merged. */
export function withDerived(props: Props): Props {
  return {
    ...props,
    has_phone_number: props.contact_phone_number ? 'yes' : 'no',
    address_complete: props.address_street && props.address_city && props.address_zip ? 'yes' : 'no',
  }
}
export const DERIVED = new Set(['has_phone_number', 'address_complete'])

/** lab_result child case properties from one row. */
export function labResultProps(row: LinkRow, external: string, county: County): Props {
  const f = row.field
  const t = row.typed
  return present({
    accession_number: row.accession ?? '',
    external_id: `${external}#${row.patientKey ?? ''}#${row.accession ?? ''}`,
    name: `${external} lab_result`,
    parent_external_id: external,
    parent_type: 'patient',
    owner_id: county.locationId ?? '',
    lab_result: resultKind(f('OBXOBSERVATIONRESULTTEXT')),
    result_text: f('OBXOBSERVATIONRESULTTEXT'),
    analysis_date: t.analysed_at,
    eclrs_create_date: t.result_created_at,
    specimen_collection_date: t.collected_at,
    specimen_source: f('OBRSPECIMENSOURCENAME'),
    test_type: f('OBXLOINCDESC'),
    eclrs_loinc: f('OBXLOINCCODE'),
    laboratory: f('MSHSENDINGFACILITYNAME'),
    ordering_facility_name: f('ZLRFACILITYNAME'),
    ordering_facility_address: join([f('ZLRFACILITYADDRESSLINE1'), f('ZLRFACILITYADDRESSLINE2')], '\n'),
    ordering_facility_city: f('ZLRFACILITYCITY'),
    ordering_facility_phone: f('ZLRFACILITYPHONE'),
    ordering_provider_first_name: f('OBRPROVIDERFIRSTNAME'),
    ordering_provider_last_name: f('OBRPROVIDERLASTNAME'),
    ordering_provider_name: join([f('OBRPROVIDERFIRSTNAME'), f('OBRPROVIDERLASTNAME')], ' '),
    ordering_provider_address: f('ZLRPROVIDERADDRESSLINE1'),
    ordering_provider_city: f('ZLRPROVIDERCITY'),
    // v2 columns
    employer_name: f('PIDEMPLOYERNAME'),
    employer_address: f('PIDEMPLOYERADDRESS'),
    employer_phone: f('PIDEMPLOYERPHONE'),
    employer_phone_2: f('PIDEMPLOYERPHONEALT'),
    employee_number: f('PIDEMPLOYEENUMBER'),
    employee_job_title: f('PIDEMPLOYEEJOBTITLE'),
    school_name: f('PIDSCHOOLNAME'),
    school_district: f('PIDSCHOOLDISTRICT'),
    school_code: f('PIDSCHOOLCODE'),
    school_visitor_type: f('PIDSCHOOLJOBCLASS'),
    school_attended: f('PIDSCHOOLPRESENT'),
    name_employer_school: join([f('PIDSCHOOLNAME'), f('PIDEMPLOYERNAME')], ', '),
    // v3 columns
    first_test: f('PIDFIRSTTESTYN'),
    aoe_date: f('PIDAOEDATE'),
    healthcare_employee: f('PIDHEALTHEMPLOYEDYN'),
    eclrs_symptomatic: f('PIDCOVIDSYMPTOMATICYN'),
    eclrs_symptom_onset_date: f('PIDCOVIDDATEOFONSET'),
    eclrs_hospitalized: f('PIDHOSPITALIZEDYN'),
    eclrs_icu: f('PIDICUYN'),
    eclrs_congregate_care_resident: f('PIDCONGREGATECAREYN'),
    eclrs_pregnant: f('PIDPREGNANCYIND'),
  })
}

export interface Merge<T> {
  value: T
  /** Values added where the record had none. */
  applied: Record<string, string>
  /** Values not applied because the record already holds a different one. */
  dropped: Record<string, string>
}

/**
 * Add what is missing: a key the record lacks, or holds empty, takes the incoming value; a key with
 * a different non-empty value keeps it, and the incoming value is reported as dropped.
 */
export function addMissing<T extends Record<string, string | null>>(current: T, incoming: Record<string, string | null>, skip?: Set<string>): Merge<T> {
  const value: Record<string, string | null> = { ...current }
  const applied: Record<string, string> = {}
  const dropped: Record<string, string> = {}
  for (const [k, v] of Object.entries(incoming)) {
    if (v === null || v === '' || skip?.has(k)) continue
    const old = current[k]
    if (old === undefined || old === null || old === '') {
      value[k] = v
      applied[k] = v
    } else if (old !== v) dropped[k] = v
  }
  return { value: value as T, applied, dropped }
}
