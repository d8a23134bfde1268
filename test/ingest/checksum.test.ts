import { createReadStream, readdirSync } from 'node:fs'
import { describe, expect, it } from 'vitest'
import { checksums, checksumsByDefinition } from '../../src/ingest/eclrs/checksum.ts'
import { headerVersion, type Version } from '../../src/ingest/eclrs/columns.ts'
import { readRecords, serialise } from '../../src/ingest/eclrs/records.ts'
import { convertRow } from '../../src/ingest/generate.ts'
import { FIXTURES, row } from '../helpers/files.ts'

const b64 = (bufs: Buffer[]) => bufs.map((b) => b.toString('base64'))
const byDefinition = (fields: string[]) => b64(checksumsByDefinition(fields, (f) => serialise(f.map((s) => Buffer.from(s))).bytes))

async function fixtureRows(name: string) {
  let version: Version | undefined
  const rows = []
  for await (const r of readRecords(createReadStream(FIXTURES + name))) {
    if (r.line === 1) version = headerVersion(r.fields.join('|'))
    else rows.push({ r, sums: b64(checksums(r, version!)) })
  }
  return rows
}

describe('checksums', () => {
  it('equal the definition (each form built in full) on every fixture row', async () => {
    for (const name of readdirSync(FIXTURES)) {
      for (const { r, sums } of await fixtureRows(name)) expect(sums, `${name}:${r.line}`).toEqual(byDefinition(r.fields))
    }
  })

  it('are known values: base64 SHA-256 of the row re-serialised', async () => {
    const [first] = await fixtureRows('new_records.txt')
    const { createHash } = await import('node:crypto')
    const line = (await import('node:fs')).readFileSync(FIXTURES + 'new_records.txt', 'utf8').split('\n')[1]
    expect(first.sums[0]).toBe(createHash('sha256').update(line).digest('base64'))
  })

  it('match across versions: a v1 row padded to v3 has the v3 row\'s checksums', async () => {
    const v1 = row(1, { PIDLASTNAME: 'SAMEPERSON' })
    for (const to of [2, 3] as Version[]) {
      const up = convertRow(v1, to)
      const rec = serialise(up.map((s) => Buffer.from(s)))
      expect(b64(checksums(rec, to))).toEqual(b64(checksums(serialise(v1.map((s) => Buffer.from(s))), 1)))
    }
  })

  it('the same people in the v1, v2 and v3 fixtures share their v1 checksums', async () => {
    const v1 = (await fixtureRows('new_records.txt')).map((x) => x.sums[0])
    expect((await fixtureRows('v2_new_records.txt')).map((x) => x.sums[0])).toEqual(v1)
    expect((await fixtureRows('v3_new_records.txt')).map((x) => x.sums[0])).toEqual(v1)
  })
})
