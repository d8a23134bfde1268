/**
 * Phone numbers and the keyed hashes made of them. A number is parsed and normalised with
 * libphonenumber (E.164); one that cannot be a number of its region is rejected before any lookup.
 * The verification server's `uuid` is a keyed hash of number and episode: a retry of an item that
 * was already texted carries the same uuid, and the server answers 409 instead of texting again.
 *
 * Keys. Until migration 014 both hashes were keyed with the raw HERALD_SECRET_KEY; since, each has
 * its own key derived from it (privacy/keys.ts: exposure:uuid, exposure:lookup). What was stored
 * under the raw secret stays readable and matched, and nothing stored is recomputed:
 * - exposure_notices.uuid: the server's idempotency key for a code it may already have issued. A
 *   stored uuid is a value, kept as it is (issue sends the stored one). Each notice also carries
 *   uuid_key, the key its uuid is made with: 1 (the raw secret) for every notice made before 014, 2
 *   after. The phone check (re)computes a notice's uuid with that notice's key, so a notice made
 *   before the upgrade, issued or not, gets the very uuid it would have had, and a retry after the
 *   upgrade is still idempotent with the server. (Decided per notice, not per number: a notice made
 *   after the upgrade for a number and episode another notice had before it gets a different uuid.)
 * - phone_lookups.phone_hash: a one-way hash cannot be re-keyed without the number, which the cache
 *   does not keep, so rows made before 014 (key_version 1) stay as they are; the cache is read under
 *   both keys and written under the new one. The old rows are no use after HERALD_LOOKUP_CACHE_DAYS;
 *   once none is left (key_version = 1), a later release may drop the second read.
 */
import { createHmac } from 'node:crypto'
import { parsePhoneNumberFromString, type CountryCode } from 'libphonenumber-js'
import type { Db } from '../db/types.ts'
import { deriveKey } from '../privacy/keys.ts'
import type { LineType } from './clients.ts'

/** E.164, or null when the number is impossible (too short or long, not a number) in `region`. */
export function normalisePhone(raw: string, region: string): string | null {
  const parsed = parsePhoneNumberFromString(raw, region as CountryCode)
  return parsed && parsed.isPossible() ? parsed.number : null
}

const hmac = (key: string | Buffer, text: string) => createHmac('sha256', key).update(text).digest()

/** The idempotency uuid of a person's code for one episode. */
export function issueUuid(key: string | Buffer, e164: string, episodeStart: string): string {
  const h = hmac(key, `issue|${e164}|${episodeStart}`).toString('hex')
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-4${h.slice(13, 16)}-${((parseInt(h[16], 16) & 3) | 8).toString(16)}${h.slice(17, 20)}-${h.slice(20, 32)}`
}

/** The lookup cache's key for a number. */
export const lookupHash = (key: string | Buffer, e164: string): Buffer => hmac(key, `lookup|${e164}`)

/** exposure_notices.uuid_key and phone_lookups.key_version: 1 the raw secret (before 014), 2 the derived keys. */
export const RAW_SECRET = 1

export class ExposureKeys {
  private readonly uuidKey: Buffer
  private readonly lookupKey: Buffer
  private readonly searchKey: Buffer

  constructor(private readonly secret: string) {
    this.uuidKey = deriveKey(secret, 'exposure:uuid')
    this.lookupKey = deriveKey(secret, 'exposure:lookup')
    // Messaging's search key (privacy/seal.ts Sealer.hash): an opt-out is recorded under it.
    this.searchKey = deriveKey(secret, 'messaging:search')
  }

  /** The keyed hash messaging finds a number by (Sealer.hash): opt-outs (sms_opt_outs) are kept under it. */
  optOutHash(e164: string): Buffer {
    return hmac(this.searchKey, e164)
  }

  /** A notice's uuid with the key its uuid_key names. */
  uuid(uuidKey: number | undefined, e164: string, episodeStart: string): string {
    return issueUuid(uuidKey === RAW_SECRET ? this.secret : this.uuidKey, e164, episodeStart)
  }

  /** The cache key a new lookup answer is stored under. */
  lookupHash(e164: string): Buffer {
    return lookupHash(this.lookupKey, e164)
  }

  /** Fresh cached answers, by the hex of lookupHash(number): a row under the new key, else one made under the raw secret. */
  async cached(db: Db, phones: string[], days: number): Promise<Map<string, LineType>> {
    const keys = phones.map((p) => [this.lookupHash(p), lookupHash(this.secret, p)])
    const rows = await db.query(
      `SELECT encode(phone_hash, 'hex') AS h, valid, line_type FROM phone_lookups
       WHERE phone_hash = ANY($1::bytea[]) AND checked_at > now() - make_interval(days => $2)`, [keys.flat(), days])
    const found = new Map(rows.map((r) => [r.h, { valid: r.valid, lineType: r.line_type }]))
    const out = new Map<string, LineType>()
    for (const [now, before] of keys) {
      const answer = found.get(now.toString('hex')) ?? found.get(before.toString('hex'))
      if (answer) out.set(now.toString('hex'), answer)
    }
    return out
  }

  /** The uuid_key of each notice, by id. */
  async uuidKeys(db: Db, ids: string[]): Promise<Map<string, number>> {
    const rows = await db.query('SELECT id::text, uuid_key FROM exposure_notices WHERE id = ANY($1::bigint[])', [ids])
    return new Map(rows.map((r) => [r.id, r.uuid_key]))
  }
}

/** Minutes east of UTC in `timeZone` on the date `day` (YYYY-MM-DD): daylight saving included. */
export function tzOffsetMinutes(timeZone: string, day: string): number {
  const noon = new Date(`${day}T12:00:00Z`)
  const name = new Intl.DateTimeFormat('en-US', { timeZone, timeZoneName: 'longOffset' }).formatToParts(noon)
    .find((p) => p.type === 'timeZoneName')?.value ?? 'GMT'
  const m = /GMT([+-])(\d{1,2}):?(\d{2})?/.exec(name)
  return m ? (m[1] === '-' ? -1 : 1) * (Number(m[2]) * 60 + Number(m[3] ?? 0)) : 0
}
