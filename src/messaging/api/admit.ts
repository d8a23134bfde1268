/**
 * Admission: the one rule every way a text is created goes through (the API, a bulk job at upload
 * and again when it starts, the CLI). The rate limit (a token bucket per service and key type, one
 * token a request) and the daily limit (texts per service per local day; test keys do not count),
 * then the insert. Requests that arrive together are admitted together, in one transaction of four
 * statements (group commit), so an API process does not pay a transaction per text; row locks on
 * the buckets and counters keep the limits exact across any number of API processes sharing the
 * database.
 */
import { randomUUID } from 'node:crypto'
import type { Db, Queryable } from '../../db/types.ts'
import type { KeyType } from '../keys.ts'
import type { Service } from '../services.ts'
import { OPTED_OUT } from '../inbound/optouts.ts'
import { ApiError, badRequest } from './errors.ts'

export interface NewNotification {
  id: string
  service: Service
  templateId: string
  templateVersion: number
  apiKeyId: string | null
  keyType: KeyType
  reference: string | null
  recipientHash: Buffer
  recipientCt: Buffer
  personalisationCt: Buffer | null
  international: boolean
  jobId?: string
  jobRow?: number
  /** Sent at this time (scheduled_for), not before: the send queue's retry_at. */
  scheduledFor?: Date | null
  /** An email (src/messaging/email/): its type, Reply-To and sealed unsubscribe URL; absent: a text. */
  email?: { replyTo: string | null; unsubscribeCt: Buffer | null }
}

/**
 * What one request asks of the limits. `request`: it takes one of its key type's rate tokens (an
 * API call, a job upload); `texts`: the room it needs under the daily limit, taken by `row` (the
 * text admitted with it), only checked without one (a job's rows at upload; a request that is
 * refused anyway, which Notify still answers 429 when over a limit).
 */
export interface Claim {
  service: Service
  keyType: KeyType
  request: boolean
  texts: number
  row?: NewNotification
}

/**
 * A new notification's id: a UUIDv7 (RFC 9562), the time in milliseconds and then random bits, so
 * the primary key's index takes each moment's texts on its last pages instead of on random ones.
 */
export function notificationId(): string {
  const time = Date.now().toString(16).padStart(12, '0')
  const random = randomUUID() // version 4: keep its random bits and its variant, set the version to 7
  return `${time.slice(0, 8)}-${time.slice(8)}-7${random.slice(15)}`
}

/** Refused: over a limit, or (`opted_out`, within the limits) a text to a number that replied STOP to the service. */
export type Admission = { ok: true; createdAt: Date } | { ok: false; limit: Refusal }
export type Refusal = 'rate' | 'daily' | 'opted_out'

const KEY_WORD = { normal: 'LIVE', team: 'TEAM', test: 'TEST' } as const

/** Notify's answer to a refused admission (app/v2/errors.py: RateLimitError, TooManyRequestsError; Herald's opt-out: BadRequestError). */
export function limitError(service: Service, keyType: KeyType, limit: Refusal): ApiError {
  if (limit === 'opted_out') return badRequest(OPTED_OUT)
  return limit === 'rate'
    ? new ApiError(429, 'RateLimitError', `Exceeded rate limit for key type ${KEY_WORD[keyType]} of ${service.rateLimit} requests per 60 seconds`)
    : new ApiError(429, 'TooManyRequestsError', `Exceeded send limits (sms: ${service.messageLimit}) for today`)
}

/** One request admitted on its own (a job upload, the CLI): its own transaction. */
export async function admitOne(db: Db, claim: Claim): Promise<Admission> {
  return (await db.transaction((tx) => admitBatch(tx, [claim])))[0]
}

export const NOTIFICATION_COLUMNS = ['id', 'service_id', 'template_id', 'template_version', 'api_key_id', 'key_type', 'job_id', 'job_row',
  'reference', 'recipient_hash', 'recipient_ct', 'personalisation_ct', 'international', 'created_at']
export const notificationRow = (n: NewNotification, at: Date) => [n.id, n.service.id, n.templateId, n.templateVersion, n.apiKeyId, n.keyType,
  n.jobId ?? null, n.jobRow ?? null, n.reference, n.recipientHash, n.recipientCt, n.personalisationCt, n.international, at]

/**
 * One INSERT for a batch, every column an array parameter (bytes as hex): a statement in one round
 * trip, where COPY takes two; for the API's small batches that is the cheaper way in.
 */
async function insertNotifications(tx: Queryable, batch: NewNotification[], at: Date): Promise<Set<string>> {
  const hex = (b: Buffer | null) => (b ? b.toString('hex') : null)
  // A text to a number that opted out of the service (replied STOP) is not inserted: the ids
  // returned are the rows that went in (an opted-out one answers OPTED_OUT, src/messaging/inbound/optouts.ts).
  const rows = await tx.query(
    `INSERT INTO notifications (id, service_id, template_id, template_version, api_key_id, key_type, reference, recipient_hash, recipient_ct,
       personalisation_ct, international, created_at, scheduled_for, retry_at, notification_type, reply_to, unsubscribe_ct)
     SELECT id, s, t, v, k, kt, r, decode(rh, 'hex'), decode(rc, 'hex'), decode(pc, 'hex'), i, $12, sf, sf, nt, rt, decode(uc, 'hex')
     FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::int[], $5::uuid[], $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::boolean[],
       $13::timestamptz[], $14::text[], $15::text[], $16::text[]) AS x(id, s, t, v, k, kt, r, rh, rc, pc, i, sf, nt, rt, uc)
     WHERE nt <> 'sms' OR NOT EXISTS (SELECT 1 FROM sms_opt_outs o WHERE o.service_id = x.s AND o.number_hash = decode(x.rh, 'hex'))
     RETURNING id::text`,
    [batch.map((n) => n.id), batch.map((n) => n.service.id), batch.map((n) => n.templateId), batch.map((n) => n.templateVersion),
      batch.map((n) => n.apiKeyId), batch.map((n) => n.keyType), batch.map((n) => n.reference), batch.map((n) => hex(n.recipientHash)),
      batch.map((n) => hex(n.recipientCt)), batch.map((n) => hex(n.personalisationCt)), batch.map((n) => n.international), at,
      batch.map((n) => n.scheduledFor?.toISOString() ?? null), batch.map((n) => (n.email ? 'email' : 'sms')),
      batch.map((n) => n.email?.replyTo ?? null), batch.map((n) => hex(n.email?.unsubscribeCt ?? null))])
  return new Set(rows.map((r) => r.id as string))
}

const group = <T>(items: T[], key: (t: T) => string) => {
  const m = new Map<string, T[]>()
  for (const t of items) m.set(key(t), [...(m.get(key(t)) ?? []), t])
  return m
}

/**
 * Takes from rows that may not exist yet: the UPDATE first (the steady state: one statement), then,
 * for the keys it did not find, the rows are created and those keys taken from.
 */
async function takeFrom<K extends { key: string }, R extends { key: string }>(wanted: K[], update: (ws: K[]) => Promise<R[]>, create: (ws: K[]) => Promise<unknown>) {
  const got = new Map((await update(wanted)).map((r) => [r.key, r]))
  const missing = wanted.filter((w) => !got.has(w.key))
  if (missing.length) {
    await create(missing)
    for (const r of await update(missing)) got.set(r.key, r)
  }
  return got
}

/**
 * Admits a batch in one transaction; answers each claim in order. The rows go in first and the
 * limits are taken last, so the bucket and counter rows (which every API process shares) stay
 * locked only for two statements and the commit; the rare refused rows are deleted again.
 */
export async function admitBatch(tx: Queryable, batch: Claim[]): Promise<Admission[]> {
  const answers = new Map<Claim, Admission>()
  const at = new Date()
  const rows = batch.filter((c) => c.row)
  const inserted = rows.length ? await insertNotifications(tx, rows.map((c) => c.row!), at) : new Set<string>()
  // An opted-out text took no row: it is judged by the limits as a request without one, and refused for its number after.
  const optedOut = new Set(rows.filter((c) => !inserted.has(c.row!.id)))
  const takes = (c: Claim) => Boolean(c.row) && !optedOut.has(c)
  // Rate limit: tokens refill at rate_limit a minute, up to rate_limit; a full bucket to begin with.
  const byBucket = group(batch.filter((c) => c.request), (c) => `${c.service.id}/${c.keyType}`)
  const buckets = [...byBucket.entries()].map(([key, cs]) => ({ key, s: cs[0].service.id, k: cs[0].keyType, n: cs.length, lim: cs[0].service.rateLimit }))
  const rate = buckets.length === 0 ? new Map<string, { granted: number }>() : await takeFrom(buckets, (bs) => tx.query(
    `WITH w AS (SELECT * FROM unnest($1::uuid[], $2::text[], $3::int[], $4::int[]) AS w(s, k, n, lim)),
     cur AS (SELECT b.service_id, b.key_type, w.n,
                    least(w.lim::float8, b.tokens + extract(epoch FROM clock_timestamp() - b.refilled_at) * w.lim / 60.0) AS avail
             FROM rate_buckets b JOIN w ON b.service_id = w.s AND b.key_type = w.k ORDER BY 1, 2 FOR UPDATE OF b)
     UPDATE rate_buckets b SET tokens = c.avail - least(c.n, floor(c.avail)), refilled_at = clock_timestamp()
     FROM cur c WHERE b.service_id = c.service_id AND b.key_type = c.key_type
     RETURNING b.service_id::text || '/' || b.key_type AS key, least(c.n, floor(c.avail))::int AS granted`,
    [bs.map((b) => b.s), bs.map((b) => b.k), bs.map((b) => b.n), bs.map((b) => b.lim)]) as Promise<{ key: string; granted: number }[]>,
  (bs) => tx.query(`INSERT INTO rate_buckets (service_id, key_type, tokens) SELECT s, k, lim FROM unnest($1::uuid[], $2::text[], $3::int[]) AS w(s, k, lim)
    ON CONFLICT DO NOTHING`, [bs.map((b) => b.s), bs.map((b) => b.k), bs.map((b) => b.lim)]))
  for (const [key, cs] of byBucket) cs.forEach((c, i) => (i < (rate.get(key)?.granted ?? 0) ? null : answers.set(c, { ok: false, limit: 'rate' })))

  // Daily limit: live and team keys only, per day in the service's time zone. Rows take their room;
  // claims without a row (a job's rows at upload, a refused request) are checked against what is left.
  const counted = batch.filter((c) => !answers.has(c) && c.keyType !== 'test' && c.texts > 0)
  const byService = group(counted, (c) => c.service.id)
  const days = [...byService.entries()].map(([key, cs]) => ({ key, n: cs.filter(takes).length, lim: cs[0].service.messageLimit, tz: cs[0].service.timezone }))
  const today = days.length === 0 ? new Map<string, { granted: number; texts: number }>() : await takeFrom(days, (ds) => tx.query(
    `WITH w AS (SELECT s, n, lim, (now() AT TIME ZONE tz)::date AS day FROM unnest($1::uuid[], $2::int[], $3::int[], $4::text[]) AS w(s, n, lim, tz)),
     cur AS (SELECT d.service_id, d.day, greatest(0, least(w.n, w.lim - d.texts)) AS granted FROM daily_counts d
             JOIN w ON d.service_id = w.s AND d.day = w.day ORDER BY 1 FOR UPDATE OF d)
     UPDATE daily_counts d SET texts = d.texts + c.granted FROM cur c WHERE d.service_id = c.service_id AND d.day = c.day
     RETURNING d.service_id::text AS key, c.granted, d.texts`,
    [ds.map((d) => d.key), ds.map((d) => d.n), ds.map((d) => d.lim), ds.map((d) => d.tz)]) as Promise<{ key: string; granted: number; texts: number }[]>,
  (ds) => tx.query(`INSERT INTO daily_counts (service_id, day) SELECT s, (now() AT TIME ZONE tz)::date FROM unnest($1::uuid[], $2::text[]) AS w(s, tz)
    ON CONFLICT DO NOTHING`, [ds.map((d) => d.key), ds.map((d) => d.tz)]))
  for (const [s, cs] of byService) {
    const t = today.get(s) ?? { granted: 0, texts: Infinity }
    let taken = 0
    for (const c of cs) {
      const within = takes(c) ? taken++ < t.granted : t.texts + c.texts <= c.service.messageLimit
      if (!within) answers.set(c, { ok: false, limit: 'daily' })
    }
  }

  for (const c of optedOut) if (!answers.has(c)) answers.set(c, { ok: false, limit: 'opted_out' })
  const refused = rows.filter((c) => answers.has(c) && !optedOut.has(c))
  if (refused.length) await tx.query('DELETE FROM notifications WHERE id = ANY($1::uuid[])', [refused.map((c) => c.row!.id)])
  return batch.map((c) => answers.get(c) ?? { ok: true, createdAt: at })
}

/**
 * A bulk job as it starts: all its rows counted at once against today's limit (in the service's time
 * zone), or none if they would pass it (Notify: `sending limits exceeded`). Answers the day counted
 * on, or null. In the caller's transaction, with the job's own row lock.
 */
export async function reserveDay(tx: Queryable, service: { id: string; timezone: string; messageLimit: number }, texts: number): Promise<string | null> {
  await tx.query(`INSERT INTO daily_counts (service_id, day) VALUES ($1, (now() AT TIME ZONE $2)::date) ON CONFLICT DO NOTHING`, [service.id, service.timezone])
  const [r] = await tx.query(
    `UPDATE daily_counts SET texts = texts + $3 WHERE service_id = $1 AND day = (now() AT TIME ZONE $2)::date AND texts + $3 <= $4
     RETURNING day::text AS day`, [service.id, service.timezone, texts, service.messageLimit])
  return r?.day ?? null
}

/** Gives back room a job counted and did not use (rows cancelled or skipped), on the day it counted them. */
export async function giveBackDay(tx: Queryable, serviceId: string, day: string, texts: number): Promise<void> {
  if (texts > 0) await tx.query(`UPDATE daily_counts SET texts = greatest(0, texts - $3) WHERE service_id = $1 AND day = $2::date`, [serviceId, day, texts])
}

/**
 * Collects the requests of the moment and admits them together, at most `maxInFlight` batches in
 * flight. Two: one holding the shared limit rows (until its commit) while the next inserts its
 * rows and waits for them. More only queue on the same row locks, each woken in turn, and leave
 * the batches smaller (docs/benchmarks.md § Messaging: 4 in flight were slower than 2).
 */
export class Admitter {
  private queue: { c: Claim; resolve: (a: Admission) => void; reject: (e: unknown) => void }[] = []
  private inFlight = 0
  private scheduled = false

  constructor(private readonly db: Db, private readonly maxBatch = 500, private readonly maxInFlight = 2) {}

  admit(c: Claim): Promise<Admission> {
    return new Promise((resolve, reject) => {
      this.queue.push({ c, resolve, reject })
      this.schedule()
    })
  }

  private schedule() {
    if (this.scheduled || this.inFlight >= this.maxInFlight || this.queue.length === 0) return
    this.scheduled = true
    // After the requests already read in this turn of the event loop have joined the batch.
    setImmediate(() => {
      this.scheduled = false
      void this.flush()
    })
  }

  private async flush() {
    const batch = this.queue.splice(0, this.maxBatch)
    if (batch.length === 0) return
    this.inFlight++
    try {
      const answers = await this.db.transaction((tx) => admitBatch(tx, batch.map((b) => b.c)))
      batch.forEach((b, i) => b.resolve(answers[i]))
    } catch (err) {
      for (const b of batch) b.reject(err)
    } finally {
      this.inFlight--
      this.schedule()
    }
  }
}
