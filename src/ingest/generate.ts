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
  onProgress?: (written: number) => void
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

export async function generateEclrs(opts: GenerateOptions): Promise<{ rows: number; repeated: number }> {
  const faker = new Faker({ locale: [en] })
  faker.seed(opts.seed ?? 1)
  // Pools drawn once: picking from them is much faster than calling faker per row.
  const pool = (n: number, f: () => string) => Array.from({ length: n }, f)
  const lastNames = pool(3000, () => faker.person.lastName().toUpperCase())
  const firstNames = pool(2000, () => faker.person.firstName().toUpperCase())
  const streets = pool(3000, () => faker.location.streetAddress().toUpperCase())
  const cities = pool(300, () => faker.location.city().toUpperCase())
  const labs = pool(40, () => `${faker.company.name().toUpperCase()} LABORATORY`)
  const pick = <T>(a: T[]) => a[faker.number.int(a.length - 1)]
  const cols = COLUMNS[opts.version]
  const at = Object.fromEntries(cols.map((c, i) => [c, i]))
  const runId = faker.string.alphanumeric({ length: 6, casing: 'upper' })
  const now = Date.UTC(2026, 10, 20)

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
