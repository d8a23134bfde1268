/**
 * Phone check: a pending notice's number is normalised (libphonenumber), then its line type looked
 * up (Twilio Lookup v2), at most `lookupConcurrency` at a time, unless the cache (phone_lookups, by
 * keyed hash) has a fresh answer. Mobile (and the VoIP types configured) go on to be issued; the
 * rest end not sent with the reason, as does a number opted out (STOP) of any messaging service,
 * before its lookup. A 429 or 5xx is tried again later (checkQueue's retry policy), and only a
 * notice out of attempts ends not sent for it.
 */
import type { ExposureConfig } from '../config.ts'
import type { Db } from '../db/types.ts'
import { ServiceError, type LineType, type LookupClient } from './clients.ts'
import { normalisePhone, type ExposureKeys } from './keys.ts'
import type { Change, Notice } from './notices.ts'
import { optedOutAnywhere } from '../messaging/inbound/optouts.ts'

/** Not sent: the resident replied STOP to a service of the department (src/messaging/inbound/optouts.ts). */
export const optedOutNotice = (n: Notice): Change => ({ id: n.id, state: 'not_sent', reason: 'opted_out', event: { kind: 'not_sent', detail: { reason: 'opted_out' } } })

const VOIP = new Set(['fixedVoip', 'nonFixedVoip'])

/**
 * Decides each notice, `lookupConcurrency` at a time. Told to stop, it starts no more: the notices
 * not started are returned in `unstarted`, for the caller to release. A lookup starts only before
 * `until` (ms): the claim's lease end as this process sees it, less the lookup's timeout, so every
 * lookup ends while the notice is still this worker's (a lookup another worker took over would be
 * paid twice; nothing is texted here). A notice reached after it is returned in `unstarted` too.
 */
export async function checkPhones(
  db: Db, notices: Notice[], config: ExposureConfig, key: ExposureKeys, lookup: LookupClient | undefined, until: number, signal: AbortSignal,
): Promise<{ changes: Change[]; unstarted: Notice[] }> {
  const e164 = new Map(notices.map((n) => [n.id, n.phone ? normalisePhone(n.phone, config.defaultRegion) : null]))
  // Cache rows and uuids made before migration 014 keep their key (keys.ts says how).
  const hashOf = (p: string) => key.lookupHash(p)
  const known = await key.cached(db, [...new Set([...e164.values()].filter((p): p is string => !!p))], config.lookupCacheDays)
  const uuidKeys = await key.uuidKeys(db, notices.map((n) => n.id))
  // A resident who replied STOP to any of the department's services gets no code text either (no lookup paid for it).
  const optedOut = await optedOutAnywhere(db, [...new Set([...e164.values()].filter((p): p is string => !!p))].map((p) => key.optOutHash(p)))
  const fresh = new Map<string, LineType>() // by hash: two people may share a number

  const late: Notice[] = []
  const decide = async (n: Notice): Promise<Change | undefined> => {
    const phone = e164.get(n.id)
    if (!n.phone) return { id: n.id, state: 'not_sent', reason: 'no_phone', event: { kind: 'not_sent', detail: { reason: 'no_phone' } } }
    if (!phone) return { id: n.id, state: 'not_sent', reason: 'invalid', event: { kind: 'not_sent', detail: { reason: 'invalid', by: 'libphonenumber' } } }
    if (optedOut.has(key.optOutHash(phone).toString('hex'))) return optedOutNotice(n)
    const hash = hashOf(phone)
    let answer = known.get(hash.toString('hex'))
    if (!answer && lookup) {
      if (Date.now() > until) {
        late.push(n)
        return undefined
      }
      try {
        answer = await lookup.lineType(phone)
        fresh.set(hash.toString('hex'), answer)
      } catch (err) {
        const e = err as ServiceError
        // Refused (a 4xx trying again will not cure): not sent, visibly failed, for an operator to look at.
        if (!(e instanceof ServiceError) || !e.retryable) {
          return { id: n.id, failure: { error: 'lookup refused', permanent: true, detail: { reason: 'lookup_refused', status: e.status } } }
        }
        // A 429 (Twilio's 20429) waits as told and spends no attempt; a 5xx or no answer backs off (spec.retry).
        const error = `lookup ${e.status || 'no answer'}`
        return e.status === 429
          ? { id: n.id, failure: { error, postponeSeconds: e.retryAfter ?? 1, detail: { step: 'lookup', status: e.status } } }
          : { id: n.id, failure: { error, detail: { step: 'lookup', status: e.status } } }
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
      id: n.id, state: 'phone_checked', reason: null, phoneE164: phone, uuid: key.uuid(uuidKeys.get(n.id), phone, n.episodeStart),
      event: { kind: 'phone_checked', detail: { line_type: lineType } },
    }
  }

  const changes: Change[] = []
  let next = 0
  await Promise.all(Array.from({ length: Math.min(config.lookupConcurrency, notices.length) }, async () => {
    while (next < notices.length && !signal.aborted) {
      const change = await decide(notices[next++])
      if (change) changes.push(change)
    }
  }))
  if (fresh.size > 0) {
    await db.query(
      `INSERT INTO phone_lookups (phone_hash, valid, line_type)
       SELECT decode(h, 'hex'), v, t FROM unnest($1::text[], $2::boolean[], $3::text[]) AS x(h, v, t)
       ON CONFLICT (phone_hash) DO UPDATE SET valid = excluded.valid, line_type = excluded.line_type, checked_at = now()`,
      [[...fresh.keys()], [...fresh.values()].map((a) => a.valid), [...fresh.values()].map((a) => a.lineType)])
  }
  return { changes, unstarted: [...late, ...notices.slice(next)] }
}
