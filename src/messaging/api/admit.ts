/**
 * Admitting notifications: the rate limit (a token bucket per service and key type), the daily
 * limit (texts per service per local day; test keys do not count), and the insert. Requests that
 * arrive together are admitted together, in one transaction of four statements (group commit), so
 * an API process does not pay a transaction per text; row locks on the buckets and counters keep
 * the limits exact across any number of API processes sharing the database.
 */
import { randomUUID } from 'node:crypto'
import type { Db, Queryable } from '../../db/types.ts'
import type { KeyType } from '../keys.ts'
import type { Service } from '../services.ts'

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

export type Admission = { ok: true; createdAt: Date } | { ok: false; limit: 'rate' | 'daily' }

export const NOTIFICATION_COLUMNS = ['id', 'service_id', 'template_id', 'template_version', 'api_key_id', 'key_type', 'job_id', 'job_row',
  'reference', 'recipient_hash', 'recipient_ct', 'personalisation_ct', 'international', 'created_at']
export const notificationRow = (n: NewNotification, at: Date) => [n.id, n.service.id, n.templateId, n.templateVersion, n.apiKeyId, n.keyType,
  n.jobId ?? null, n.jobRow ?? null, n.reference, n.recipientHash, n.recipientCt, n.personalisationCt, n.international, at]

/**
 * One INSERT for a batch, every column an array parameter (bytes as hex): a statement in one round
 * trip, where COPY takes two; for the API's small batches that is the cheaper way in.
 */
async function insertNotifications(tx: Queryable, batch: NewNotification[], at: Date) {
  const hex = (b: Buffer | null) => (b ? b.toString('hex') : null)
  await tx.query(
    `INSERT INTO notifications (id, service_id, template_id, template_version, api_key_id, key_type, reference, recipient_hash, recipient_ct,
       personalisation_ct, international, created_at)
     SELECT id, s, t, v, k, kt, r, decode(rh, 'hex'), decode(rc, 'hex'), decode(pc, 'hex'), i, $12
     FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::int[], $5::uuid[], $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::boolean[])
       AS x(id, s, t, v, k, kt, r, rh, rc, pc, i)`,
    [batch.map((n) => n.id), batch.map((n) => n.service.id), batch.map((n) => n.templateId), batch.map((n) => n.templateVersion),
      batch.map((n) => n.apiKeyId), batch.map((n) => n.keyType), batch.map((n) => n.reference), batch.map((n) => hex(n.recipientHash)),
      batch.map((n) => hex(n.recipientCt)), batch.map((n) => hex(n.personalisationCt)), batch.map((n) => n.international), at])
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
async function takeFrom<K extends { key: string }>(wanted: K[], update: (ws: K[]) => Promise<{ key: string; granted: number }[]>, create: (ws: K[]) => Promise<unknown>) {
  const got = new Map((await update(wanted)).map((r) => [r.key, r.granted]))
  const missing = wanted.filter((w) => !got.has(w.key))
  if (missing.length) {
    await create(missing)
    for (const r of await update(missing)) got.set(r.key, r.granted)
  }
  return got
}

/**
 * Admits a batch in one transaction; answers each notification in order. The rows go in first and
 * the limits are taken last, so the bucket and counter rows (which every API process shares) stay
 * locked only for two statements and the commit; the rare refused rows are deleted again.
 */
export async function admitBatch(tx: Queryable, batch: NewNotification[]): Promise<Admission[]> {
  const answers = new Map<NewNotification, Admission>()
  const at = new Date()
  await insertNotifications(tx, batch, at)
  // Rate limit: tokens refill at rate_limit a minute, up to rate_limit; a full bucket to begin with.
  const byBucket = group(batch, (n) => `${n.service.id}/${n.keyType}`)
  const buckets = [...byBucket.entries()].map(([key, ns]) => ({ key, s: ns[0].service.id, k: ns[0].keyType, n: ns.length, lim: ns[0].service.rateLimit }))
  const rate = await takeFrom(buckets, (bs) => tx.query(
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
  const within: NewNotification[] = []
  for (const [key, ns] of byBucket) ns.forEach((n, i) => (i < (rate.get(key) ?? 0) ? within.push(n) : answers.set(n, { ok: false, limit: 'rate' })))

  // Daily limit: live and team keys only, per day in the service's time zone.
  const byService = group(within.filter((n) => n.keyType !== 'test'), (n) => n.service.id)
  const days = [...byService.entries()].map(([key, ns]) => ({ key, n: ns.length, lim: ns[0].service.messageLimit, tz: ns[0].service.timezone }))
  const today = days.length === 0 ? new Map<string, number>() : await takeFrom(days, (ds) => tx.query(
    `WITH w AS (SELECT s, n, lim, (now() AT TIME ZONE tz)::date AS day FROM unnest($1::uuid[], $2::int[], $3::int[], $4::text[]) AS w(s, n, lim, tz)),
     cur AS (SELECT d.service_id, d.day, greatest(0, least(w.n, w.lim - d.texts)) AS granted FROM daily_counts d
             JOIN w ON d.service_id = w.s AND d.day = w.day ORDER BY 1 FOR UPDATE OF d)
     UPDATE daily_counts d SET texts = d.texts + c.granted FROM cur c WHERE d.service_id = c.service_id AND d.day = c.day
     RETURNING d.service_id::text AS key, c.granted`,
    [ds.map((d) => d.key), ds.map((d) => d.n), ds.map((d) => d.lim), ds.map((d) => d.tz)]) as Promise<{ key: string; granted: number }[]>,
  (ds) => tx.query(`INSERT INTO daily_counts (service_id, day) SELECT s, (now() AT TIME ZONE tz)::date FROM unnest($1::uuid[], $2::text[]) AS w(s, tz)
    ON CONFLICT DO NOTHING`, [ds.map((d) => d.key), ds.map((d) => d.tz)]))
  for (const [s, ns] of byService) ns.forEach((n, i) => (i < (today.get(s) ?? 0) ? null : answers.set(n, { ok: false, limit: 'daily' })))

  const refused = batch.filter((n) => answers.has(n))
  if (refused.length) await tx.query('DELETE FROM notifications WHERE id = ANY($1::uuid[])', [refused.map((n) => n.id)])
  return batch.map((n) => answers.get(n) ?? { ok: true, createdAt: at })
}

/**
 * Collects the requests of the moment and admits them together, at most `maxInFlight` batches in
 * flight. Two: one holding the shared limit rows (until its commit) while the next inserts its
 * rows and waits for them. More only queue on the same row locks, each woken in turn, and leave
 * the batches smaller (docs/benchmarks.md § Messaging: 4 in flight were slower than 2).
 */
export class Admitter {
  private queue: { n: NewNotification; resolve: (a: Admission) => void; reject: (e: unknown) => void }[] = []
  private inFlight = 0
  private scheduled = false

  constructor(private readonly db: Db, private readonly maxBatch = 500, private readonly maxInFlight = 2) {}

  admit(n: NewNotification): Promise<Admission> {
    return new Promise((resolve, reject) => {
      this.queue.push({ n, resolve, reject })
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
      const answers = await this.db.transaction((tx) => admitBatch(tx, batch.map((b) => b.n)))
      batch.forEach((b, i) => b.resolve(answers[i]))
    } catch (err) {
      for (const b of batch) b.reject(err)
    } finally {
      this.inFlight--
      this.schedule()
    }
  }
}
