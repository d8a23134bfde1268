/**
 * Send: created notifications are claimed through the work queue (sendQueue), rendered (template
 * version + personalisation, unsealed only here), counted in fragments, and handed to the SMS
 * providers in priority order. The claim itself moves each text to `sending` (queue.claim's
 * `hold`): the rows it returns are this worker's and no longer due, so no worker claims them again,
 * and a text is offered to a provider only while this worker's lease on it is live; one that
 * waited past it, or was not started when asked to stop, goes back to `created` untouched. A crash
 * can leave at most the texts claimed and not yet recorded (about two chunks) unaccounted for,
 * never text anyone twice; those wait for their receipts (or, after 72 hours, become
 * temporary-failure). Test keys never reach a provider: their outcome is simulated by number.
 */
import type { Engine } from '../../engine/engine.ts'
import { claim, fail, finish, leaseEnd, release, type QueueSpec } from '../../engine/queue.ts'
import type { Db, Queryable } from '../../db/types.ts'
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
// Chunks a round claims at most before it returns its counts to the runner.
const ROUND_CHUNKS = 64

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
  const byName = new Map(providers.map((p) => [p.name, p]))
  // Claimed (and held) a chunk at a time, the next chunk as soon as fewer than a chunk wait: at most
  // about two chunks are `sending` and not yet handed over, what a crash may leave unsent.
  const chunk = Math.max(1, Math.ceil(concurrency / 2))
  let swept = 0

  /** One text: prepared (72 hours, opt-out, number, template), then offered to each provider in `order` until one takes it. */
  async function one(r: Record<string, any>, order: string[], failures: Map<string, number>): Promise<Outcome> {
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

  return {
    name: 'send',
    batchSize: concurrency * ROUND_CHUNKS,
    async step(db, signal) {
      if (Date.now() - swept > 60_000) {
        swept = Date.now()
        await timeouts(db, log)
      }
      return round(db, signal)
    },
  }

  /**
   * One round: `concurrency` senders, each taking the next claimed text as soon as its last call
   * ends, so as many calls are in flight as allowed for as long as texts are due; the claims of the
   * next chunk and the recording of outcomes run beside the calls, never between them. Ends when
   * nothing is due, after ROUND_CHUNKS chunks (the runner's progress), or when stopped.
   */
  async function round(db: Db, signal: AbortSignal): Promise<Record<string, number>> {
    const counts: Record<string, number> = {}
    let order = await providerOrder(db, providers.map((p) => p.name), opts.recoverySeconds)
    let reorder = false
    const ready: (Record<string, any> & { id: string; until: number })[] = []
    const back: string[] = [] // held, not started: stopped, or their lease ran out while they waited
    let chunks = 0
    let drained = false
    let claiming: Promise<void> | undefined
    let error: unknown
    const more = () => !drained && !signal.aborted && error === undefined && chunks < ROUND_CHUNKS
    const refill = () => {
      if (claiming || ready.length >= chunk || !more()) return
      chunks++
      claiming = (async () => {
        if (reorder) {
          reorder = false
          order = await providerOrder(db, providers.map((p) => p.name), opts.recoverySeconds)
        }
        const until = leaseEnd(spec)
        // The effect gate, in the claim: the rows it returns are this worker's and already `sending`,
        // so no other worker can claim them again, whatever becomes of this one.
        const rows = await claim(db, spec, workerId, chunk, { hold: `status = 'sending', updated_at = now()`, returning: CLAIMED })
        if (rows.length < chunk) drained = true
        for (const r of rows) ready.push(Object.assign(r, { until }))
      })().catch((err) => void (error ??= err)).finally(() => { claiming = undefined })
    }

    // Outcomes are written a batch at a time, one write at a time: what the calls finish while one is
    // written goes in the next (the busier, the bigger the batches).
    const outcomes: Outcome[] = []
    let failures = new Map<string, number>()
    let writing: Promise<void> | undefined
    const write = () => {
      if (writing || outcomes.length === 0) return
      const batch = outcomes.splice(0)
      const failed = failures
      failures = new Map()
      writing = (async () => {
        await record(db, spec, workerId, batch)
        await penalise(db, failed, batch.filter((o) => o.ref).map((o) => o.provider!), opts.recoverySeconds)
        if (failed.size) reorder = true
        for (const o of batch) {
          const k = o.retry ? (o.permanent ? 'technical-failure' : 'retrying') : o.status ?? 'sending'
          counts[k] = (counts[k] ?? 0) + 1
        }
      })().catch((err) => void (error ??= err)).finally(() => {
        writing = undefined
        write()
      })
    }

    const sender = async () => {
      for (;;) {
        refill()
        const r = ready.shift()
        if (!r) {
          if (!claiming) return
          await claiming
          continue
        }
        refill() // the next chunk is claimed while this one's calls are made
        // Stopped (or a write failed): not started, so given back. A lease that ran out while the
        // text waited its turn: the claim is no longer this worker's to act on, so no call either.
        if (signal.aborted || error !== undefined || Date.now() > r.until) {
          back.push(r.id)
          continue
        }
        // A row that cannot even be read (a ciphertext under another key, a template gone) fails alone.
        outcomes.push(await one(r, order, failures).catch((err): Outcome => ({ id: r.id, retry: `could not be prepared: ${(err as Error).name}`, permanent: true })))
        write()
      }
    }
    await Promise.all(Array.from({ length: concurrency }, sender))
    while (writing) await writing
    if (back.length) {
      // Held but never offered to a provider: `created` and due again at once, no attempt spent.
      const n = await release(db, spec, workerId, back, `status = 'created', updated_at = now()`)
      if (signal.aborted) counts.released = n
      else log.warn({ texts: n }, 'send gave back texts whose claim ran out before their turn')
    }
    if (error !== undefined) throw error
    if (Object.keys(counts).length) log.info(counts, 'texts handed to providers')
    return counts
  }
}

/** What a claim returns besides id and attempts: what preparing a text reads. */
const CLAIMED = `t.key_type, t.recipient_ct, t.personalisation_ct, t.created_at,
  (SELECT body FROM template_versions v WHERE v.template_id = t.template_id AND v.version = t.template_version) AS template_body,
  (SELECT sms_sender FROM services s WHERE s.id = t.service_id) AS sms_sender,
  EXISTS (SELECT 1 FROM sms_opt_outs o WHERE o.service_id = t.service_id AND o.number_hash = t.recipient_hash) AS opted_out`

/**
 * Records a batch of outcomes, only on rows this worker holds: statuses, provider and reference,
 * price (queue.finish); texts no provider took go back to `created` and wait their backoff, or fail
 * for good out of attempts or past 72 hours (queue.fail: technical-failure). Texts handed over and
 * nothing else (the usual batch) are one statement; a status settled here goes with its callback
 * in one transaction.
 */
async function record(db: Db, spec: QueueSpec, workerId: string, outcomes: Outcome[]) {
  const done = outcomes.filter((o) => !o.retry)
  const retries = outcomes.filter((o) => o.retry)
  // Only a status settled here (test keys, a refused number) may call back: `sending` never does.
  const settles = new Set(done.filter((o) => o.status).map((o) => o.id))
  const write = async (q: Queryable) => {
    const finished = await finish(q, spec, workerId, done.map((o) => ({ id: o.id, status: o.status ?? null, provider: o.provider ?? null, ref: o.ref ?? null,
      units: o.units ?? null, multiplier: o.multiplier ?? null, sent: o.sent ?? false, done: o.done ?? false,
      reason: o.failure?.reason ?? null, code: o.failure?.code ?? null })), {
      columns: 'status text, provider text, ref text, units int, multiplier numeric, sent boolean, done boolean, reason text, code text',
      set: `status = coalesce(v.status, t.status), provider = coalesce(t.provider, v.provider), provider_ref = coalesce(t.provider_ref, v.ref),
        billable_units = coalesce(v.units, t.billable_units), rate_multiplier = coalesce(v.multiplier, t.rate_multiplier),
        sent_at = CASE WHEN v.sent THEN now() ELSE t.sent_at END, completed_at = CASE WHEN v.done THEN now() ELSE t.completed_at END, updated_at = now(),
        failure_reason = coalesce(v.reason, t.failure_reason), failure_code = coalesce(v.code, t.failure_code)`,
    })
    // A status settled here or below (technical-failure): the service's callback, in this transaction.
    await enqueueDeliveryCallbacks(q, [...finished].filter((id) => settles.has(id)))
    if (retries.length === 0) return
    await q.query(`UPDATE notifications SET status = 'created', updated_at = now() WHERE id = ANY($1::uuid[]) AND claimed_by = $2`,
      [retries.map((o) => o.id), workerId])
    const failed = await fail(q, spec, workerId, retries.map((o) => ({ id: o.id, error: o.retry!, permanent: o.permanent })))
    await enqueueDeliveryCallbacks(q, failed.filter((f) => f.failed).map((f) => f.id))
  }
  if (retries.length === 0 && settles.size === 0) await write(db)
  else await db.transaction(write)
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
