/** Temporary folders and export files built from the ECLRS headers, for tests. */
import { mkdtempSync, writeFileSync, rmSync, copyFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { COLUMNS, HEADERS, type Version } from '../../src/ingest/eclrs/columns.ts'

export const FIXTURES = fileURLToPath(new URL('../fixtures/eclrs/', import.meta.url))

export function tempDir(): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), 'herald-test-'))
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) }
}

export function copyFixture(name: string, dir: string, as = name): string {
  const path = join(dir, as)
  copyFileSync(join(FIXTURES, name), path)
  return path
}

let serial = 0
/** A valid data row of `version` for a synthetic person; override columns by name. */
export function row(version: Version, values: Record<string, string> = {}): string[] {
  const n = ++serial
  const base: Record<string, string> = {
    PIDLASTNAME: `TESTLAST${n}`, PIDFIRSTNAME: 'TESTFIRST', PIDDATEOFBIRTH: '01MAR1947:00:00:00.000000', PIDCOUNTYCODE: '61',
    PIDHOMEPHONE: '5550100199', PIDPATIENTKEY: `PK${n}`, OBRACCESSIONNUM: `ACC${n}`,
    OBRCOLLECTIONDATE: '18MAR2020:00:00:00.000000', OBRCREATEDATE: '20MAR2020:06:03:36.589000', RESULTPOSITIVE: 'POSITIVE',
    ...values,
  }
  return COLUMNS[version].map((c) => base[c] ?? '')
}

export function exportText(version: Version, rows: string[][], eol = '\n'): string {
  return [HEADERS[version], ...rows.map((r) => r.join('|'))].join(eol) + eol
}

export function writeExport(dir: string, name: string, content: string | Buffer): string {
  const path = join(dir, name)
  writeFileSync(path, content)
  return path
}
