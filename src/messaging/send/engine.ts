/**
 * Send: created notifications are claimed with a lease, rendered (template version + personalisation,
 * unsealed only here), counted in fragments, and handed to the SMS providers in priority order.
 * A chunk is marked `sending` just before its calls, so a crash can leave at most the texts in flight
 * unaccounted for, never text anyone twice; those wait for their receipts (or, after 72 hours,
 * become temporary-failure). Test keys never reach a provider: their outcome is simulated by number.
 */
import type { BatchEngine } from '../../engine/engine.ts'
import type { Db } from '../../db/types.ts'
import type { Logger } from '../../log.ts'
import type { Sealer } from '../../privacy/seal.ts'
import { checkPhone } from '../phone.ts'
import { smsLength } from '../sms.ts'
import { render } from '../templates.ts'
import { ProviderError, type SmsProvider } from './provider.ts'
import { penalise, providerOrder } from './providers.ts'

const LEASE_SECONDS = 120
const MAX_ATTEMPTS = 10
const TIMEOUT_HOURS = 72
const PIPELINE = 4

/** Test keys: a number ending 0002 fails for good, 0003 fails for now, any other is delivered (as GOV.UK Notify's 7700900002/3). */
export function simulatedStatus(e164: string): 'delivered' | 'permanent-failure' | 'temporary-failure' {
  return e164.endsWith('0002') ? 'permanent-failure' : e164.endsWith('0003') ? 'temporary-failure' : 'delivered'
}

interface Outcome { id: string; status?: string; provider?: string; ref?: string; units?: number; multiplier?: number; retryIn?: number; sent?: boolean; done?: boolean }

/** What a text abroad costs, in domestic texts: by the country's calling code, else the default. */
export interface InternationalRates { byCode: Record<string, number>; fallback: number }
const DEFAULT_RATES: InternationalRates = { byCode: {}, fallback: 2 }

export function sendEngine(opts: { providers: SmsProvider[]; sealer: Sealer; region: string; concurrency: number; recoverySeconds: number;
  rates?: InternationalRates; log: Logger }): BatchEngine {
  const rates = opts.rates ?? DEFAULT_RATES
  const { providers, sealer, concurrency, log } = opts
  let swept = 0

  async function deliver(db: Db, rows: Record<string, any>[]): Promise<Outcome[]> {
    const order = await providerOrder(db, providers.map((p) => p.name), opts.recoverySeconds)
    const byName = new Map(providers.map((p) => [p.name, p]))
    const failures = new Map<string, number>()
    const outcomes = await Promise.all(rows.map(async (r): Promise<Outcome> => {
      const supplied = sealer.open(Buffer.from(r.recipient_ct))
      const phone = checkPhone(supplied, opts.region)
      const personalisation = r.personalisation_ct ? JSON.parse(sealer.open(Buffer.from(r.personalisation_ct))) : {}
      const { text, missing } = render(r.template_body, personalisation)
      if (!phone.ok || missing.length) return { id: r.id, status: 'validation-failed', done: true }
      const length = smsLength(text)
      const priced = { units: length.fragments, multiplier: phone.international ? (rates.byCode[phone.callingCode] ?? rates.fallback) : 1 }
      if (r.key_type === 'test') return { id: r.id, status: simulatedStatus(phone.e164), ...priced, sent: true, done: true }
      for (const name of order) {
        try {
          const ref = await byName.get(name)!.send({ id: r.id, to: phone.e164, from: r.sms_sender, body: text, encoding: length.encoding })
          return { id: r.id, provider: name, ref, ...priced, sent: true }
        } catch (err) {
          const e = err instanceof ProviderError ? err : new ProviderError(String(err), 'unknown')
          if (e.kind === 'recipient') return { id: r.id, status: 'permanent-failure', provider: name, ...priced, done: true }
          if (e.kind === 'unknown') return { id: r.id, provider: name, ...priced, sent: true }
          failures.set(name, (failures.get(name) ?? 0) + 1)
          log.warn({ provider: name, err: e.message }, 'SMS provider failed; trying the next')
        }
      }
      const tooOld = Date.now() - Date.parse(r.created_at) > TIMEOUT_HOURS * 3600_000
      if (r.attempts >= MAX_ATTEMPTS || tooOld) return { id: r.id, status: 'technical-failure', done: true }
      return { id: r.id, status: 'created', retryIn: Math.min(15 * 2 ** r.attempts, 3600) }
    }))
    await penalise(db, failures, outcomes.filter((o) => o.ref).map((o) => o.provider!), opts.recoverySeconds)
    return outcomes
  }

  return {
    name: 'send',
    batchSize: concurrency * 4,
    async step(db) {
      if (Date.now() - swept > 60_000) {
        swept = Date.now()
        await timeouts(db, log)
      }
      const claimed = await db.query(
        `UPDATE notifications n SET claimed_until = now() + make_interval(secs => $2)
         WHERE n.id IN (SELECT id FROM notifications WHERE status = 'created' AND (retry_at IS NULL OR retry_at <= now())
                          AND (claimed_until IS NULL OR claimed_until < now()) ORDER BY created_at LIMIT $1 FOR UPDATE SKIP LOCKED)
         RETURNING n.id, n.key_type, n.recipient_ct, n.personalisation_ct, n.attempts, n.created_at,
           (SELECT body FROM template_versions v WHERE v.template_id = n.template_id AND v.version = n.template_version) AS template_body,
           (SELECT sms_sender FROM services s WHERE s.id = n.service_id) AS sms_sender`, [concurrency * 4, LEASE_SECONDS])
      const counts: Record<string, number> = {}
      // Chunks of a quarter of the concurrency, four at a time: while one chunk's rows are written,
      // the others' calls are in flight, so the providers are never left waiting on the database.
      const size = Math.max(1, Math.ceil(concurrency / PIPELINE))
      const chunks: typeof claimed[] = []
      for (let i = 0; i < claimed.length; i += size) chunks.push(claimed.slice(i, i + size))
      let next = 0
      await Promise.all(Array.from({ length: Math.min(PIPELINE, chunks.length) }, async () => {
        while (next < chunks.length) {
          const chunk = chunks[next++]
          // From here a crash may leave these texts sent or not: they are `sending`, never claimed again.
          await db.query(`UPDATE notifications SET status = 'sending', attempts = attempts + 1, updated_at = now() WHERE id = ANY($1::uuid[]) AND status = 'created'`,
            [chunk.map((r) => r.id)])
          const outcomes = await deliver(db, chunk)
          await record(db, outcomes)
          for (const o of outcomes) {
            const k = o.status ?? 'sending'
            counts[k] = (counts[k] ?? 0) + 1
          }
        }
      }))
      if (claimed.length) log.info(counts, 'texts handed to providers')
      return counts
    },
  }
}

async function record(db: Db, outcomes: Outcome[]) {
  await db.query(
    `UPDATE notifications n SET
       status = CASE WHEN o.status IS NULL THEN n.status ELSE o.status END,
       provider = coalesce(n.provider, o.provider), provider_ref = coalesce(n.provider_ref, o.ref),
       billable_units = coalesce(o.units, n.billable_units), rate_multiplier = coalesce(o.multiplier, n.rate_multiplier),
       sent_at = CASE WHEN o.sent THEN now() ELSE n.sent_at END, completed_at = CASE WHEN o.done THEN now() ELSE n.completed_at END,
       retry_at = CASE WHEN o.retry_in IS NULL THEN NULL ELSE now() + make_interval(secs => o.retry_in) END,
       claimed_until = NULL, updated_at = now()
     FROM json_to_recordset($1::json) AS o(id uuid, status text, provider text, ref text, units int, multiplier numeric, retry_in int, sent boolean, done boolean)
     WHERE n.id = o.id`,
    [JSON.stringify(outcomes.map((o) => ({ id: o.id, status: o.status ?? null, provider: o.provider ?? null, ref: o.ref ?? null, units: o.units ?? null,
      multiplier: o.multiplier ?? null, retry_in: o.retryIn ?? null, sent: o.sent ?? false, done: o.done ?? false })))])
}

/** GOV.UK Notify's rule: sending or pending for 72 hours is a temporary failure; created for 72 hours, a technical one. */
async function timeouts(db: Db, log: Logger) {
  const rows = await db.query(
    `UPDATE notifications SET status = CASE WHEN status = 'created' THEN 'technical-failure' ELSE 'temporary-failure' END,
       completed_at = now(), updated_at = now()
     WHERE (status IN ('sending', 'pending') AND coalesce(sent_at, created_at) < now() - make_interval(hours => $1))
        OR (status = 'created' AND created_at < now() - make_interval(hours => $1))
     RETURNING status`, [TIMEOUT_HOURS])
  if (rows.length) log.warn({ notifications: rows.length }, `texts without an outcome for ${TIMEOUT_HOURS} hours marked failed`)
}
