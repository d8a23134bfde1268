/**
 * Phone check: a pending notice's number is normalised (libphonenumber), then its line type looked
 * up (Twilio Lookup v2), at most `lookupConcurrency` at a time, unless the cache (phone_lookups, by
 * keyed hash) has a fresh answer. Mobile (and the VoIP types configured) go on to be issued; the
 * rest end not sent with the reason. A 429 or 5xx is tried again later, never a "not sent".
 */
import type { ExposureConfig } from '../config.ts'
import type { Db } from '../db/types.ts'
import { ServiceError, type LineType, type LookupClient } from './clients.ts'
import { issueUuid, lookupHash, normalisePhone } from './keys.ts'
import { backoff, MAX_ATTEMPTS, type Change, type Notice } from './notices.ts'

const VOIP = new Set(['fixedVoip', 'nonFixedVoip'])

async function cached(db: Db, hashes: Buffer[], days: number): Promise<Map<string, LineType>> {
  const rows = await db.query(
    `SELECT encode(phone_hash, 'hex') AS h, valid, line_type FROM phone_lookups
     WHERE phone_hash = ANY($1::bytea[]) AND checked_at > now() - make_interval(days => $2)`, [hashes, days])
  return new Map(rows.map((r) => [r.h, { valid: r.valid, lineType: r.line_type }]))
}

export async function checkPhones(db: Db, notices: Notice[], config: ExposureConfig, key: string, lookup: LookupClient | undefined): Promise<Change[]> {
  const e164 = new Map(notices.map((n) => [n.id, n.phone ? normalisePhone(n.phone, config.defaultRegion) : null]))
  const hashOf = (p: string) => lookupHash(key, p)
  const known = await cached(db, [...new Set([...e164.values()].filter((p): p is string => !!p))].map(hashOf), config.lookupCacheDays)
  const fresh = new Map<string, LineType>() // by hash: two people may share a number

  const decide = async (n: Notice): Promise<Change> => {
    const phone = e164.get(n.id)
    if (!n.phone) return { id: n.id, state: 'not_sent', reason: 'no_phone', event: { kind: 'not_sent', detail: { reason: 'no_phone' } } }
    if (!phone) return { id: n.id, state: 'not_sent', reason: 'invalid', event: { kind: 'not_sent', detail: { reason: 'invalid', by: 'libphonenumber' } } }
    const hash = hashOf(phone)
    let answer = known.get(hash.toString('hex'))
    if (!answer && lookup) {
      try {
        answer = await lookup.lineType(phone)
        fresh.set(hash.toString('hex'), answer)
      } catch (err) {
        const e = err as ServiceError
        if (!(e instanceof ServiceError) || !e.retryable) {
          return { id: n.id, state: 'not_sent', reason: 'lookup_refused', attempt: true, event: { kind: 'not_sent', detail: { reason: 'lookup_refused', status: e.status } } }
        }
        if (n.attempts + 1 >= MAX_ATTEMPTS) {
          return { id: n.id, state: 'not_sent', reason: 'out_of_attempts', attempt: true, event: { kind: 'not_sent', detail: { reason: 'out_of_attempts', status: e.status } } }
        }
        // A 429 (Twilio's 20429) waits as told and spends no attempt; a 5xx or no answer backs off.
        const rateLimited = e.status === 429
        return {
          id: n.id, state: 'pending', reason: `lookup ${e.status || 'no answer'}`, attempt: !rateLimited,
          retryIn: rateLimited ? e.retryAfter ?? 1 : backoff(n.attempts + 1), event: { kind: 'retrying', detail: { step: 'lookup', status: e.status } },
        }
      }
    }
    // Without a lookup service only the local check stands: the number is taken as it is.
    const lineType = answer?.lineType ?? (answer ? 'unknown' : 'unchecked')
    if (answer && !answer.valid) return { id: n.id, state: 'not_sent', reason: 'invalid', event: { kind: 'not_sent', detail: { reason: 'invalid', by: 'lookup' } } }
    if (answer && !config.lineTypes.includes(lineType)) {
      const reason = lineType === 'landline' ? 'landline' : VOIP.has(lineType) ? 'voip' : 'line_type'
      return { id: n.id, state: 'not_sent', reason, event: { kind: 'not_sent', detail: { reason, line_type: lineType } } }
    }
    return {
      id: n.id, state: 'phone_checked', reason: null, phoneE164: phone, uuid: issueUuid(key, phone, n.episodeStart),
      event: { kind: 'phone_checked', detail: { line_type: lineType } },
    }
  }

  const changes: Change[] = []
  let next = 0
  await Promise.all(Array.from({ length: Math.min(config.lookupConcurrency, notices.length) }, async () => {
    while (next < notices.length) changes.push(await decide(notices[next++]))
  }))
  if (fresh.size > 0) {
    await db.query(
      `INSERT INTO phone_lookups (phone_hash, valid, line_type)
       SELECT decode(h, 'hex'), v, t FROM unnest($1::text[], $2::boolean[], $3::text[]) AS x(h, v, t)
       ON CONFLICT (phone_hash) DO UPDATE SET valid = excluded.valid, line_type = excluded.line_type, checked_at = now()`,
      [[...fresh.keys()], [...fresh.values()].map((a) => a.valid), [...fresh.values()].map((a) => a.lineType)])
  }
  return changes
}
