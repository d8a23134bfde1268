/**
 * The keys that name a lab row's person, and the lock each one has in link_locks.
 *
 * Two link batches must never decide about the same key at once (see batch.ts). PostgreSQL's
 * advisory locks would do, but they live in a fixed shared table (max_locks_per_transaction ×
 * connections, about 6,400 by default) that two batches of thousands of rows exhaust ("out of
 * shared memory"). Row locks cost no shared memory, so each key has a row in link_locks, written
 * by the first link batch (or case import) that needs it, and a batch locks those rows (FOR UPDATE
 * SKIP LOCKED).
 */
import { createHash } from 'node:crypto'

/** Rule (b)'s name parts: upper case; the first name's first word ("Mary Ann" → "MARY"). */
function matchName(last: string | null, first: string | null): { last: string; first: string } | null {
  const l = last?.trim().toUpperCase()
  const f = first?.trim().split(/\s+/)[0]?.toUpperCase()
  return l && f ? { last: l, first: f } : null
}

export interface MatchKey {
  dob: string
  last: string
  first: string
}

export function matchKeyOf(dob: string | null, last: string | null, first: string | null): MatchKey | null {
  const names = matchName(last, first)
  return dob && names ? { dob, ...names } : null
}

export const matchKeyText = (m: MatchKey) => `${m.dob}|${m.last}|${m.first}`

/** Rule (a)'s and rule (b)'s keys of a row, as text. */
export function personKeys(patientKey: string | null, match: MatchKey | null): string[] {
  const keys: string[] = []
  if (patientKey) keys.push(`k:${patientKey}`)
  if (match) keys.push(`m:${matchKeyText(match)}`)
  return keys
}

/** A key's row in link_locks: the first 64 bits of its SHA-256, as a bigint in decimal text. */
export function lockId(key: string): string {
  return createHash('sha256').update(key).digest().readBigInt64BE(0).toString()
}

/**
 * Ids that CommCare will hold (a person's external_id, a case's case_id) come from the row that
 * created the record: a rerun of the same rows after a crash chooses the same ones.
 */
export function uuidFrom(name: string): string {
  const h = createHash('sha256').update(`herald:${name}`).digest('hex')
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-4${h.slice(13, 16)}-${((parseInt(h[16], 16) & 3) | 8).toString(16)}${h.slice(17, 20)}-${h.slice(20, 32)}`
}
