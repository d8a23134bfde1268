/**
 * The callbacks engine: POSTs each queued callback (callback_queue) to its service's URL, as GOV.UK
 * Notify's send-delivery-status and send-inbound-sms tasks do: the JSON body Notify sends,
 * `Authorization: Bearer <token>`, `Content-Type: application/json`, a 5 s timeout.
 *
 * Outcomes, per row:
 *   sent     the service's server answered 2xx: sent_at, and nothing of it is kept but the row
 *   retrying a connection error, a timeout, a 5xx or a 429: tried again 300 s later (callbackQueue.retry)
 *   failed   any other answer (a 4xx, a redirect: Notify does not retry them), out of retries, no callback
 *            set any more, or nothing left to report (the notification gone by retention): failed_at with
 *            the answer or error, `herald queue failed callbacks` and the console's Callbacks page show it
 *
 * The body is built at the moment of sending, from the notification (or received text) the row names:
 * the phone number is opened for the call and kept nowhere else. The POST happens only for rows whose
 * claim this worker still holds, checked (and the lease extended past the timeout) in one statement just
 * before (queue.hold). A crash after the POST and before its outcome is recorded sends that callback
 * again when the lease runs out: at least once, as Notify's are.
 */
import type { Engine } from '../../engine/engine.ts'
import { claim, fail, finish, hold, release, type Failure } from '../../engine/queue.ts'
import type { Db, Queryable } from '../../db/types.ts'
import type { Logger } from '../../log.ts'
import type { Sealer } from '../../privacy/seal.ts'
import { notifyTime } from '../api/present.ts'
import { inboundBodies, type Body } from './inbound.ts'
import { callbackQueue } from './queue.ts'

export const CALLBACK_TIMEOUT_MS = 5000
const BATCH = 50

interface Row { id: string; attempts: number; kind: string; subject_id: string; status: string | null; service_id: string; url: string | null; token_ct: Buffer | null }

export function callbacksEngine(opts: { sealer: Sealer; log: Logger; workerId: string; timeoutMs?: number; batchSize?: number }): Engine {
  const { sealer, log, workerId } = opts
  const timeoutMs = opts.timeoutMs ?? CALLBACK_TIMEOUT_MS
  const batch = opts.batchSize ?? BATCH
  const spec = callbackQueue

  return {
    name: 'callbacks',
    batchSize: batch,
    async step(db, signal) {
      if (signal.aborted) return {}
      const rows = await claim<Row>(db, spec, workerId, batch, {
        returning: `t.kind, t.subject_id, t.status, t.service_id,
          (SELECT url FROM service_callbacks c WHERE c.service_id = t.service_id AND c.kind = t.kind) AS url,
          (SELECT token_ct FROM service_callbacks c WHERE c.service_id = t.service_id AND c.kind = t.kind) AS token_ct` })
      if (rows.length === 0) return {}
      if (signal.aborted) {
        await release(db, spec, workerId, rows.map((r) => r.id))
        return { released: rows.length }
      }
      const bodies = await bodiesOf(db, sealer, rows)
      const failures: Failure[] = []
      const ready = rows.filter((r) => {
        const b = bodies.get(r.id)!
        if (!r.url || !r.token_ct) failures.push({ id: r.id, error: `the service has no ${r.kind} callback any more`, permanent: true })
        else if ('none' in b) failures.push({ id: r.id, error: b.none, permanent: true })
        else return true
        return false
      })
      // The effect gate: only rows this worker still holds are posted, their lease extended past the timeout.
      const mine = await hold(db, spec, workerId, ready.map((r) => r.id),
        `claimed_until = greatest(t.claimed_until, now() + make_interval(secs => $3))`, [Math.ceil(timeoutMs / 1000) + spec.leaseSeconds])
      if (mine.size < ready.length) log.warn({ lost: ready.length - mine.size }, 'callbacks lost the claim of some rows; another worker has them')
      const sent: string[] = []
      await Promise.all(ready.filter((r) => mine.has(r.id)).map(async (r) => {
        const outcome = await post(r.url!, sealer.open(Buffer.from(r.token_ct!)), (bodies.get(r.id) as { body: object }).body, timeoutMs)
        if (outcome.ok) sent.push(r.id)
        else failures.push({ id: r.id, error: outcome.error, permanent: outcome.permanent, detail: outcome.statusCode ? { status_code: outcome.statusCode } : undefined })
      }))
      const counts: Record<string, number> = {}
      await db.transaction(async (tx) => {
        counts.sent = (await finish(tx, spec, workerId, sent.map((id) => ({ id })), { set: 'sent_at = now()' })).size
        for (const f of await fail(tx, spec, workerId, failures)) counts[f.failed ? 'failed' : 'retrying'] = (counts[f.failed ? 'failed' : 'retrying'] ?? 0) + 1
      })
      for (const k of Object.keys(counts)) if (!counts[k]) delete counts[k]
      // Services and answers only: never a URL (it may carry credentials), a token or a number.
      if (failures.length) log.warn({ callbacks: failures.length, errors: [...new Set(failures.map((f) => f.error))].slice(0, 5) }, 'callbacks not accepted by their services')
      return counts
    },
  }
}

type Outcome = { ok: true } | { ok: false; error: string; permanent: boolean; statusCode?: number }

/** One POST, as Notify's: retried on connection errors, timeouts, 5xx and 429; any other non-2xx is final. */
export async function post(url: string, token: string, body: object, timeoutMs: number): Promise<Outcome> {
  let res: Response
  try {
    res = await fetch(url, {
      method: 'POST', body: JSON.stringify(body), redirect: 'manual', signal: AbortSignal.timeout(timeoutMs),
      headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
    })
  } catch (err) {
    const e = err as Error & { cause?: { code?: string } }
    if (e.name === 'TimeoutError' || e.name === 'AbortError') return { ok: false, error: `no answer within ${timeoutMs / 1000} s`, permanent: false }
    return { ok: false, error: `could not connect: ${e.cause?.code ?? e.name}`, permanent: false }
  }
  // The answer's body is not needed, only read to free the connection (and never for long).
  await res.body?.cancel().catch(() => {})
  if (res.status >= 200 && res.status < 300) return { ok: true }
  const retried = res.status >= 500 || res.status === 429
  return { ok: false, error: `answered HTTP ${res.status}${retried ? '' : ': not retried'}`, permanent: !retried, statusCode: res.status }
}

/** Each row's body, read in one query per kind. */
async function bodiesOf(db: Queryable, sealer: Sealer, rows: Row[]): Promise<Map<string, Body>> {
  const out = new Map<string, Body>()
  const delivery = rows.filter((r) => r.kind === 'delivery_status')
  if (delivery.length) {
    const found = await db.query(
      `SELECT id, reference, recipient_ct, created_at, completed_at, updated_at, sent_at, notification_type, template_id, template_version, failure_reason
       FROM notifications WHERE id = ANY($1::uuid[])`, [delivery.map((r) => r.subject_id)])
    const byId = new Map(found.map((n) => [n.id as string, n]))
    for (const r of delivery) out.set(r.id, deliveryBody(byId.get(r.subject_id), r.status, sealer))
  }
  const inbound = rows.filter((r) => r.kind === 'inbound_sms')
  if (inbound.length) {
    const bodies = await inboundBodies(db, sealer, inbound.map((r) => r.subject_id))
    for (const r of inbound) out.set(r.id, bodies.get(r.subject_id) ?? { none: 'the received text is no longer kept' })
  }
  for (const r of rows) if (!out.has(r.id)) out.set(r.id, { none: `no such kind of callback: ${r.kind}` })
  return out
}

/** GOV.UK Notify's delivery-status callback body (create_delivery_status_callback_data), with Herald's failure_reason when there is one. */
function deliveryBody(n: Record<string, any> | undefined, status: string | null, sealer: Sealer): Body {
  if (!n) return { none: 'the notification is no longer kept (retention)' }
  if (!n.recipient_ct) return { none: 'the notification’s recipient is no longer kept (retention)' }
  const body: Record<string, unknown> = {
    id: n.id, reference: n.reference ?? null, to: sealer.open(Buffer.from(n.recipient_ct)), status,
    created_at: notifyTime(n.created_at), completed_at: notifyTime(n.completed_at ?? n.updated_at), sent_at: notifyTime(n.sent_at),
    notification_type: n.notification_type, template_id: n.template_id, template_version: n.template_version,
  }
  if (n.failure_reason) body.failure_reason = n.failure_reason
  return { body }
}
