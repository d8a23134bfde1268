/**
 * Send: created notifications are claimed through the work queue (sendQueue), rendered (template
 * version + personalisation, unsealed only here), counted in fragments, and handed to the SMS
 * providers in priority order. A chunk moves to `sending` just before its calls, in the statement
 * that checks this worker still holds each row's claim (queue.hold), and only the rows that
 * statement returns are handed over: a crash can leave at most the texts in flight unaccounted for,
 * never text anyone twice; those wait for their receipts (or, after 72 hours, become
 * temporary-failure). Test keys never reach a provider: their outcome is simulated by number.
 */
import type { Engine } from '../../engine/engine.ts'
import { claim, fail, finish, heartbeat, hold, release, type QueueSpec } from '../../engine/queue.ts'
import type { Db } from '../../db/types.ts'
import type { Logger } from '../../log.ts'
import type { Sealer } from '../../privacy/seal.ts'
import { checkPhone } from '../phone.ts'
import { smsLength } from '../sms.ts'
import { OPTED_OUT_REASON } from '../inbound/optouts.ts'
import { render } from '../templates.ts'
import { deliveryCallbackInsert, enqueueDeliveryCallbacks } from '../callbacks/enqueue.ts'
import type { Failure } from './failure-reasons.ts'
import { ProviderError, type SmsProvider } from './provider.ts'
import { penalise, providerOrder } from './providers.ts'
import { sendQueue } from './queue.ts'

const TIMEOUT_HOURS = 72
const PIPELINE = 4

/** Test keys: a number ending 0002 fails for good, 0003 fails for now, any other is delivered (as GOV.UK Notify's 7700900002/3). */
export function simulatedStatus(e164: string): 'delivered' | 'permanent-failure' | 'temporary-failure' {
  return e164.endsWith('0002') ? 'permanent-failure' : e164.endsWith('0003') ? 'temporary-failure' : 'delivered'
}

/** What became of one text: a status to record (none: it stays `sending`), or `retry` (every provider surely sent nothing). */
interface Outcome { id: string; status?: string; provider?: string; ref?: string; units?: number; multiplier?: number; sent?: boolean; done?: boolean
  retry?: string; permanent?: boolean; failure?: Failure | null }

/** What a text abroad costs, in domestic texts: by the country's calling code, else the default. */
export interface InternationalRates { byCode: Record<string, number>; fallback: number }
const DEFAULT_RATES: InternationalRates = { byCode: {}, fallback: 2 }

export function sendEngine(opts: { providers: SmsProvider[]; sealer: Sealer; region: string; concurrency: number; recoverySeconds: number;
  rates?: InternationalRates; log: Logger; workerId: string; leaseSeconds?: number }): Engine {
  const rates = opts.rates ?? DEFAULT_RATES
  const { providers, sealer, concurrency, log, workerId } = opts
  const spec: QueueSpec = { ...sendQueue, leaseSeconds: opts.leaseSeconds ?? sendQueue.leaseSeconds }
  let swept = 0

  async function deliver(db: Db, rows: Record<string, any>[]): Promise<Outcome[]> {
    const order = await providerOrder(db, providers.map((p) => p.name), opts.recoverySeconds)
    const byName = new Map(providers.map((p) => [p.name, p]))
    const failures = new Map<string, number>()
    // A row that cannot even be read (a ciphertext under another key, a template gone) fails alone,
    // with its reason: the others of the chunk are handed over and recorded as ever.
    const outcomes = await Promise.all(rows.map((r) => one(r).catch((err): Outcome =>
      ({ id: r.id, retry: `could not be prepared: ${(err as Error).name}`, permanent: true }))))
    await penalise(db, failures, outcomes.filter((o) => o.ref).map((o) => o.provider!), opts.recoverySeconds)
    return outcomes

    async function one(r: Record<string, any>): Promise<Outcome> {
      // Past 72 hours a text is not sent at all (GOV.UK Notify's rule): it fails for good before any call.
      if (Date.now() - Date.parse(r.created_at) > TIMEOUT_HOURS * 3600_000) return { id: r.id, retry: `not sent within ${TIMEOUT_HOURS} hours`, permanent: true }
      // Opted out (STOP) after it was accepted: never handed over (src/messaging/inbound/optouts.ts).
      if (r.opted_out) return { id: r.id, status: 'permanent-failure', done: true, failure: { reason: OPTED_OUT_REASON, code: null } }
      const supplied = sealer.open(Buffer.from(r.recipient_ct))
      const phone = checkPhone(supplied, opts.region)
      const personalisation = r.personalisation_ct ? JSON.parse(sealer.open(Buffer.from(r.personalisation_ct))) : {}
      const { text, missing } = render(r.template_body, personalisation)
      if (!phone.ok) return { id: r.id, status: 'validation-failed', done: true, failure: { reason: 'invalid number', code: null } }
      if (missing.length) return { id: r.id, status: 'validation-failed', done: true }
      const length = smsLength(text)
      const priced = { units: length.fragments, multiplier: phone.international ? (rates.byCode[phone.callingCode] ?? rates.fallback) : 1 }
      if (r.key_type === 'test') return { id: r.id, status: simulatedStatus(phone.e164), ...priced, sent: true, done: true }
      for (const name of order) {
        try {
          const ref = await byName.get(name)!.send({ id: r.id, to: phone.e164, from: r.sms_sender, body: text, encoding: length.encoding })
          return { id: r.id, provider: name, ref, ...priced, sent: true }
        } catch (err) {
          const e = err instanceof ProviderError ? err : new ProviderError(String(err), 'unknown')
          if (e.kind === 'recipient') return { id: r.id, status: 'permanent-failure', provider: name, ...priced, done: true, failure: e.failure ?? { reason: 'unknown', code: null } }
          if (e.kind === 'unknown') return { id: r.id, provider: name, ...priced, sent: true }
          failures.set(name, (failures.get(name) ?? 0) + 1)
          log.warn({ provider: name, err: e.message }, 'SMS provider failed; trying the next')
        }
      }
      return { id: r.id, retry: `no provider took it: ${order.join(', ')}` }
    }
  }

  return {
    name: 'send',
    batchSize: concurrency * 4,
    async step(db, signal) {
      if (Date.now() - swept > 60_000) {
        swept = Date.now()
        await timeouts(db, log)
      }
      const claimed = await claim(db, spec, workerId, concurrency * 4, {
        returning: `t.key_type, t.recipient_ct, t.personalisation_ct, t.created_at,
          (SELECT body FROM template_versions v WHERE v.template_id = t.template_id AND v.version = t.template_version) AS template_body,
          (SELECT sms_sender FROM services s WHERE s.id = t.service_id) AS sms_sender,
          EXISTS (SELECT 1 FROM sms_opt_outs o WHERE o.service_id = t.service_id AND o.number_hash = t.recipient_hash) AS opted_out` })
      const counts: Record<string, number> = {}
      if (claimed.length === 0) return counts
      // Chunks of a quarter of the concurrency, four at a time: while one chunk's rows are written,
      // the others' calls are in flight, so the providers are never left waiting on the database.
      const size = Math.max(1, Math.ceil(concurrency / PIPELINE))
      const chunks: typeof claimed[] = []
      for (let i = 0; i < claimed.length; i += size) chunks.push(claimed.slice(i, i + size))
      let next = 0
      // Rows not yet started keep their claim while earlier chunks take their time.
      const waiting = () => chunks.slice(next).flat().map((r) => r.id)
      const renew = setInterval(() => void heartbeat(db, spec, workerId, waiting()).catch(() => {}), (spec.leaseSeconds * 1000) / 3)
      try {
        await Promise.all(Array.from({ length: Math.min(PIPELINE, chunks.length) }, async () => {
          while (next < chunks.length && !signal.aborted) {
            const chunk = chunks[next++]
            // The effect gate: one statement checks that this worker still holds each row's claim
            // (a live lease, still `created`) and moves it to `sending`. Only the rows it returns are
            // handed to a provider: a row whose lease ran out may be another worker's now, and a row
            // moved here is no longer `created`, so no worker claims it again. From here a crash may
            // leave these texts sent or not: they stay `sending`, never sent twice.
            const mine = await hold(db, spec, workerId, chunk.map((r) => r.id), `status = 'sending', updated_at = now()`)
            if (mine.size < chunk.length) log.warn({ lost: chunk.length - mine.size }, 'send lost the claim of some texts; another worker has them')
            const outcomes = await deliver(db, chunk.filter((r) => mine.has(r.id)))
            await record(db, spec, workerId, outcomes)
            for (const o of outcomes) {
              const k = o.retry ? (o.permanent ? 'technical-failure' : 'retrying') : o.status ?? 'sending'
              counts[k] = (counts[k] ?? 0) + 1
            }
          }
        }))
      } finally {
        clearInterval(renew)
        // Stopped: what was claimed and not started goes back at once.
        if (next < chunks.length) counts.released = await release(db, spec, workerId, waiting())
      }
      if (!counts.released) delete counts.released
      log.info(counts, 'texts handed to providers')
      return counts
    },
  }
}

/**
 * Records a chunk's outcomes in one transaction, only on rows this worker holds: statuses, provider
 * and reference, price (queue.finish); texts no provider took go back to `created` and wait their
 * backoff, or fail for good out of attempts or past 72 hours (queue.fail: technical-failure).
 */
async function record(db: Db, spec: QueueSpec, workerId: string, outcomes: Outcome[]) {
  const done = outcomes.filter((o) => !o.retry)
  const retries = outcomes.filter((o) => o.retry)
  await db.transaction(async (tx) => {
    const settled = await finish(tx, spec, workerId, done.map((o) => ({ id: o.id, status: o.status ?? null, provider: o.provider ?? null, ref: o.ref ?? null,
      units: o.units ?? null, multiplier: o.multiplier ?? null, sent: o.sent ?? false, done: o.done ?? false,
      reason: o.failure?.reason ?? null, code: o.failure?.code ?? null })), {
      columns: 'status text, provider text, ref text, units int, multiplier numeric, sent boolean, done boolean, reason text, code text',
      set: `status = coalesce(v.status, t.status), provider = coalesce(t.provider, v.provider), provider_ref = coalesce(t.provider_ref, v.ref),
        billable_units = coalesce(v.units, t.billable_units), rate_multiplier = coalesce(v.multiplier, t.rate_multiplier),
        sent_at = CASE WHEN v.sent THEN now() ELSE t.sent_at END, completed_at = CASE WHEN v.done THEN now() ELSE t.completed_at END, updated_at = now(),
        failure_reason = coalesce(v.reason, t.failure_reason), failure_code = coalesce(v.code, t.failure_code)`,
    })
    // A status settled here (test keys, a refused number) or below (technical-failure): the service's callback, in this transaction.
    await enqueueDeliveryCallbacks(tx, [...settled])
    if (retries.length === 0) return
    await tx.query(`UPDATE notifications SET status = 'created', updated_at = now() WHERE id = ANY($1::uuid[]) AND claimed_by = $2`,
      [retries.map((o) => o.id), workerId])
    const failed = await fail(tx, spec, workerId, retries.map((o) => ({ id: o.id, error: o.retry!, permanent: o.permanent })))
    await enqueueDeliveryCallbacks(tx, failed.filter((f) => f.failed).map((f) => f.id))
  })
}

/** GOV.UK Notify's rule: sending or pending for 72 hours is a temporary failure; created for 72 hours, a technical one. */
async function timeouts(db: Db, log: Logger) {
  // A text never handed over fails as the work queue fails it (failed_at, last_error: `herald queue failed send`).
  const rows = await db.query(
    `WITH timed AS (UPDATE notifications SET status = CASE WHEN status = 'created' THEN 'technical-failure' ELSE 'temporary-failure' END,
       failed_at = CASE WHEN status = 'created' THEN now() END,
       last_error = CASE WHEN status = 'created' THEN 'not sent within ' || $1 || ' hours' ELSE last_error END,
       completed_at = now(), updated_at = now()
     WHERE (status IN ('sending', 'pending') AND coalesce(sent_at, created_at) < now() - make_interval(hours => $1))
        OR (status = 'created' AND created_at < now() - make_interval(hours => $1))
     RETURNING status, id, service_id),
     cb AS (${deliveryCallbackInsert('timed')}) -- the service's callback, as Notify's timeout_notifications queues it
     SELECT status FROM timed`, [TIMEOUT_HOURS])
  if (rows.length) log.warn({ notifications: rows.length }, `texts without an outcome for ${TIMEOUT_HOURS} hours marked failed`)
}
