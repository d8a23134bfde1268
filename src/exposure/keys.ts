/**
 * Phone numbers and the keyed hashes made of them. A number is parsed and normalised with
 * libphonenumber (E.164); one that cannot be a number of its region is rejected before any lookup.
 * The verification server's `uuid` is a keyed hash of number and episode: a retry of an item that
 * was already texted carries the same uuid, and the server answers 409 instead of texting again.
 */
import { createHmac } from 'node:crypto'
import { parsePhoneNumberFromString, type CountryCode } from 'libphonenumber-js'

/** E.164, or null when the number is impossible (too short or long, not a number) in `region`. */
export function normalisePhone(raw: string, region: string): string | null {
  const parsed = parsePhoneNumberFromString(raw, region as CountryCode)
  return parsed && parsed.isPossible() ? parsed.number : null
}

const hmac = (key: string, text: string) => createHmac('sha256', key).update(text).digest()

/** The idempotency uuid of a person's code for one episode. */
export function issueUuid(key: string, e164: string, episodeStart: string): string {
  const h = hmac(key, `issue|${e164}|${episodeStart}`).toString('hex')
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-4${h.slice(13, 16)}-${((parseInt(h[16], 16) & 3) | 8).toString(16)}${h.slice(17, 20)}-${h.slice(20, 32)}`
}

/** The lookup cache's key for a number. */
export const lookupHash = (key: string, e164: string): Buffer => hmac(key, `lookup|${e164}`)

/** Minutes east of UTC in `timeZone` on the date `day` (YYYY-MM-DD): daylight saving included. */
export function tzOffsetMinutes(timeZone: string, day: string): number {
  const noon = new Date(`${day}T12:00:00Z`)
  const name = new Intl.DateTimeFormat('en-US', { timeZone, timeZoneName: 'longOffset' }).formatToParts(noon)
    .find((p) => p.type === 'timeZoneName')?.value ?? 'GMT'
  const m = /GMT([+-])(\d{1,2}):?(\d{2})?/.exec(name)
  return m ? (m[1] === '-' ? -1 : 1) * (Number(m[2]) * 60 + Number(m[3] ?? 0)) : 0
}
