/**
 * Row identity across header versions (EXTERNAL_APIS.md §1, as New York's Viaduct computes it):
 * a row has one checksum per version, base64(SHA-256) of the row converted to that version:
 * going up, empty fields are inserted just before the last column; going down, the first 44 (v1)
 * or 55 (v2) fields are kept plus the last one.
 *
 * The three forms share their leading fields, so the hash of the shared prefix is computed once
 * and copied (hash.copy()), instead of hashing each form from scratch.
 */
import { createHash, hash } from 'node:crypto'
import { BASE_COUNT, VERSIONS, type Version } from './columns.ts'
import type { RawRecord } from './records.ts'

const PIPES = Array.from({ length: 21 }, (_, n) => Buffer.from('|'.repeat(n)))

/**
 * The checksum in the record's own version, in hex: its checksum form as it stands. One-shot
 * hashing into a string, no Hash object or Buffer: this runs for every row of every export.
 */
export function ownChecksum(record: Pick<RawRecord, 'bytes'>): string {
  return hash('sha256', record.bytes, 'hex')
}

/** [v1, v2, v3] SHA-256 digests of a record of `version` (its field count must match). */
export function checksums(record: Pick<RawRecord, 'bytes' | 'ends'>, version: Version): Buffer[] {
  const { bytes, ends } = record
  const own = BASE_COUNT[version]
  const tail = bytes.subarray(ends[own - 1]) // "|RESULTPOSITIVE"
  const hash = createHash('sha256')
  let hashedFields = 0
  return VERSIONS.map((target) => {
    const base = BASE_COUNT[target]
    const shared = Math.min(base, own)
    if (shared > hashedFields) {
      hash.update(bytes.subarray(hashedFields === 0 ? 0 : ends[hashedFields - 1], ends[shared - 1]))
      hashedFields = shared
    }
    const form = target === 3 ? hash : hash.copy()
    if (base > own) form.update(PIPES[base - own])
    return form.update(tail).digest()
  })
}

/** The same, from field values, by building each form in full: the definition, which the tests hold the fast path to. */
export function checksumsByDefinition(fields: string[], serialise: (fields: string[]) => Buffer): Buffer[] {
  const last = fields[fields.length - 1]
  const base = fields.slice(0, -1)
  return VERSIONS.map((target) => {
    const n = BASE_COUNT[target]
    const form = n <= base.length ? [...base.slice(0, n), last] : [...base, ...Array(n - base.length).fill(''), last]
    return createHash('sha256').update(serialise(form)).digest()
  })
}
