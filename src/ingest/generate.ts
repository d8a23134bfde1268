/**
 * Synthetic ECLRS exports for demos and benchmarks: fake people (faker), valid dates, New York
 * county codes, phones in the free-text shapes labs send, unique accession numbers. With a previous
 * file, a fraction of its rows is repeated (converted to this file's version), as real 14-day
 * exports repeat most of the last one. Deterministic for a given seed.
 */
import { createReadStream, createWriteStream } from 'node:fs'
import { once } from 'node:events'
import { Faker, en } from '@faker-js/faker'
import { BASE_COUNT, COLUMNS, HEADERS, headerVersion, type Version } from './eclrs/columns.ts'
import { readRecords } from './eclrs/records.ts'

export interface GenerateOptions {
  rows: number
  version: Version
  out: string
  repeatFrom?: string
  repeatFraction?: number
  seed?: number
  /** Rows of recurring people instead of a new person per row (the link benchmark). */
  people?: PeopleOptions
  onProgress?: (written: number) => void
}

/**
 * Person n is the same person (names, birth date, address, county, phone, patient key) in every
 * file and for every seed, so files can share people. Each row draws its person from `ranges`
 * (person numbers from..to-1) with the ranges' weights.
 */
export interface PeopleOptions {
  ranges: { from: number; to: number; weight: number }[]
  /** Share of rows that carry the person's second patient key (another lab's record of them). */
  otherKeyFraction?: number
  /** Share of rows from the person's second county. */
  otherCountyFraction?: number
}

/** A small deterministic generator (mulberry32): person n's draws depend on n alone. */
function numbers(seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = Math.imul(a ^ (a >>> 15), 1 | a)
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32
  }
}

// County codes of New York State's 62 counties, as PIDCOUNTYCODE carries them (FIPS without the state).
const NY_COUNTIES = Array.from({ length: 62 }, (_, i) => String(2 * i + 1))
const MONTHS = ['JAN', 'FEB', 'MAR', 'APR', 'MAY', 'JUN', 'JUL', 'AUG', 'SEP', 'OCT', 'NOV', 'DEC']
const pad = (n: number, w = 2) => String(n).padStart(w, '0')

function eclrsDate(d: Date, withTime = true): string {
  const day = `${pad(d.getUTCDate())}${MONTHS[d.getUTCMonth()]}${d.getUTCFullYear()}`
  if (!withTime) return `${day}:00:00:00.000000`
  return `${day}:${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())}.${pad(d.getUTCMilliseconds(), 3)}000`
}

/** Converts a row of one version to another, as the checksum rules do (pad or cut before the last column). */
export function convertRow(fields: string[], to: Version): string[] {
  const base = fields.slice(0, -1)
  const n = BASE_COUNT[to]
  const kept = base.length >= n ? base.slice(0, n) : [...base, ...Array(n - base.length).fill('')]
  return [...kept, fields[fields.length - 1]]
}

function serialiseRow(fields: string[]): string {
  return fields.map((f) => (/[|"\r\n]/.test(f) ? `"${f.replaceAll('"', '""')}"` : f)).join('|')
}

/** Person n's fields, as indexes into the name pools and values; the same n gives the same person. */
function peopleOf(lastNames: number, firstNames: number, streets: number, cities: number) {
  return (n: number) => {
    const r = numbers(n * 7919 + 17)
    const int = (max: number) => Math.floor(r() * max)
    const county = 2 * int(62) + 1
    return {
      last: int(lastNames), first: int(firstNames), dob: new Date(Date.UTC(1930 + int(90), int(12), 1 + int(28))),
      sex: ['M', 'F', 'U'][int(3)], street: int(streets), city: int(cities), zip: String(10000 + int(89999)),
      county: String(county), otherCounty: String(((county + 2 * (1 + int(61)) - 1) % 124) + 1),
      phone: `${201 + int(788)}${String(int(10_000_000)).padStart(7, '0')}`, key: `P${String(n).padStart(12, '0')}`,
    }
  }
}

export async function generateEclrs(opts: GenerateOptions): Promise<{ rows: number; repeated: number }> {
  const faker = new Faker({ locale: [en] })
  faker.seed(opts.seed ?? 1)
  // Pools drawn once: picking from them is much faster than calling faker per row. Recurring people
  // take their names from pools that are the same for every seed.
  const names = opts.people ? new Faker({ locale: [en], seed: 1 }) : faker
  const pool = (n: number, f: () => string) => Array.from({ length: n }, f)
  const lastNames = pool(3000, () => names.person.lastName().toUpperCase())
  const firstNames = pool(2000, () => names.person.firstName().toUpperCase())
  const streets = pool(3000, () => names.location.streetAddress().toUpperCase())
  const cities = pool(300, () => names.location.city().toUpperCase())
  const labs = pool(40, () => `${faker.company.name().toUpperCase()} LABORATORY`)
  const pick = <T>(a: T[]) => a[faker.number.int(a.length - 1)]
  const cols = COLUMNS[opts.version]
  const at = Object.fromEntries(cols.map((c, i) => [c, i]))
  const runId = faker.string.alphanumeric({ length: 6, casing: 'upper' })
  const now = Date.UTC(2026, 10, 20)
  const personAt = opts.people ? peopleOf(lastNames.length, firstNames.length, streets.length, cities.length) : undefined
  const drawPerson = (): number => {
    const ranges = opts.people!.ranges
    let w = faker.number.float() * ranges.reduce((s, r) => s + r.weight, 0)
    const r = ranges.find((x) => (w -= x.weight) < 0) ?? ranges[ranges.length - 1]
    return r.from + faker.number.int(r.to - r.from - 1)
  }

  const newRow = (n: number): string => {
    const f: string[] = Array(cols.length).fill('')
    const collected = new Date(now - faker.number.int(14 * 86400_000))
    const dob = new Date(Date.UTC(1930 + faker.number.int(90), faker.number.int(11), 1 + faker.number.int(27)))
    const phone = `${faker.number.int({ min: 201, max: 989 })}${faker.string.numeric(7)}`
    Object.assign(f, {
      [at.PIDLASTNAME]: pick(lastNames), [at.PIDFIRSTNAME]: pick(firstNames), [at.PIDDATEOFBIRTH]: eclrsDate(dob, false),
      [at.PIDSEXCODE]: pick(['M', 'F', 'U']), [at.PIDADDRESSLINE1]: pick(streets), [at.PIDCITY]: pick(cities),
      [at.PIDZIPCODE]: faker.string.numeric(5), [at.PIDCOUNTYCODE]: pick(NY_COUNTIES),
      [at.PIDHOMEPHONE]: faker.datatype.boolean() ? `(${phone.slice(0, 3)}) ${phone.slice(3, 6)}-${phone.slice(6)}` : phone,
      [at.MSHLABPFI]: faker.string.numeric(4), [at.MSHSENDINGFACILITYCLIA]: `${faker.string.numeric(2)}D${faker.string.numeric(7)}`,
      [at.MSHSENDINGFACILITYNAME]: pick(labs), [at.PIDPATIENTKEY]: `${runId}${pad(n, 9)}`,
      [at.OBRCOLLECTIONDATE]: eclrsDate(collected), [at.OBRCREATEDATE]: eclrsDate(new Date(collected.getTime() + 86400_000)),
      [at.OBXLOCALTESTCODE]: 'TH68-0', [at.OBXLOCALTESTDESC]: 'COVID-19 Nasopharynx', [at.OBXLOINCCODE]: '94309-2',
      [at.OBXLOINCDESC]: '2019-nCoV RNA XXX NAA+probe-Imp', [at.OBXOBSERVATIONDATE]: eclrsDate(collected),
      [at.OBXOBSERVATIONRESULTTEXT]: 'Positive for 2019-nCoV', [at.OBXOBSERVATIONRESULTTEXTSHORT]: 'POSITIVE',
      [at.OBXRESULTSTATUSCODE]: 'F', [at.OBXSNOMEDCODE]: '10828004', [at.OBRACCESSIONNUM]: `ACC${runId}${pad(n, 9)}`,
      [at.OBXANALYSISDATE]: eclrsDate(collected), [at.OBRSPECIMENSOURCENAME]: 'NASOPHARYNX',
      [at.MSHMESSAGEMASTERKEY]: `MK${runId}${pad(n, 9)}`, [at.PIDUPDATEDATE]: eclrsDate(collected),
      [at.RESULTPOSITIVE]: faker.number.int(9) < 2 ? 'NEGATIVE' : 'POSITIVE',
    })
    if (personAt) {
      const p = personAt(drawPerson())
      const other = (fraction = 0) => faker.number.float() < fraction
      Object.assign(f, {
        [at.PIDLASTNAME]: lastNames[p.last], [at.PIDFIRSTNAME]: firstNames[p.first], [at.PIDDATEOFBIRTH]: eclrsDate(p.dob, false),
        [at.PIDSEXCODE]: p.sex, [at.PIDADDRESSLINE1]: streets[p.street], [at.PIDCITY]: cities[p.city], [at.PIDZIPCODE]: p.zip,
        [at.PIDCOUNTYCODE]: other(opts.people!.otherCountyFraction) ? p.otherCounty : p.county, [at.PIDHOMEPHONE]: p.phone,
        [at.PIDPATIENTKEY]: other(opts.people!.otherKeyFraction) ? `${p.key}B` : p.key,
      })
    }
    return serialiseRow(f)
  }

  const out = createWriteStream(opts.out, { highWaterMark: 1 << 20 })
  const write = async (line: string) => {
    if (!out.write(line + '\n')) await once(out, 'drain')
  }
  await write(HEADERS[opts.version])
  let written = 0
  let repeated = 0
  const emitNew = async () => {
    await write(newRow(written))
    written++
    if (written % 10000 === 0) opts.onProgress?.(written)
  }
  if (opts.repeatFrom) {
    const fraction = opts.repeatFraction ?? 0.9
    const wantRepeats = Math.round(opts.rows * fraction)
    let previousRows = 0
    for await (const r of readRecords(createReadStream(opts.repeatFrom))) if (r.line > 1) previousRows++
    let fromVersion: Version | undefined
    let remaining = previousRows
    for await (const r of readRecords(createReadStream(opts.repeatFrom))) {
      if (fromVersion === undefined) {
        fromVersion = headerVersion(r.fields.join('|'))
        if (!fromVersion) throw new Error(`${opts.repeatFrom}: not an ECLRS export (unknown header)`)
        continue
      }
      // Take each earlier row with the probability that leaves exactly wantRepeats, new rows in between.
      if (faker.number.float() * remaining < wantRepeats - repeated) {
        while (faker.number.float() < 1 - fraction && written - repeated < opts.rows - wantRepeats) await emitNew()
        await write(serialiseRow(convertRow(r.fields, opts.version)))
        repeated++
        written++
      }
      remaining--
    }
  }
  while (written < opts.rows) await emitNew()
  out.end()
  await once(out, 'finish')
  return { rows: written, repeated }
}
