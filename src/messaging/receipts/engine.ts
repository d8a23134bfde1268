/**
 * The receipts engine applies stored delivery receipts to their notifications, a batch per
 * transaction: the batch is claimed inside it (claimInTx: the transaction is the lease; a crash
 * rolls it back and the receipts are due again).
 *
 * A receipt is bound to what was sent: it applies only to a notification sent through its provider
 * with its reference. One that names a notification (Twilio's signed URL, Vonage's client-ref under
 * its per-notification token) must match that notification's provider and, once it has one, its
 * reference; one that names none is looked up by provider and reference. A Vonage text in parts is
 * the exception for the reference: each part has its own message id and Herald keeps the first, so
 * a later part's receipt is bound by its token alone (as is any part of a text whose parts were
 * never recorded, below). A receipt that does not match is refused for good (kept with failed_at,
 * logged and counted). One whose notification has no provider yet (it outran the recording of its
 * send) waits through the queue's retries, then is checked. If on its last try the send was still
 * never recorded (its worker died mid-call: the text is `sending`, without provider, its lease run
 * out), nothing else will ever say who sent it: the receipt, authenticated for that very
 * notification, does. Only such a text can be spoken for by a provider it was not recorded with.

 * Statuses move as GOV.UK Notify moves them: update_notification_status_by_id in notifications-api
 * (app/dao/notifications_dao.py) changes a notification only while it is created, sending, pending
 * or sent, and ignores with a warning ("_duplicate_update_warning") any receipt for one already
 * delivered or failed. So no final status is ever replaced, not even temporary-failure by delivered,
 * and a final one never goes back to pending. Within a batch the first final receipt wins (as the
 * first to reach Notify would), else the latest pending. The same receipt twice changes nothing; a
 * bound receipt is deleted whether it changed the status or not.
 */
import type { Engine } from '../../engine/engine.ts'
import { claimInTx, fail, finish } from '../../engine/queue.ts'
import type { Logger } from '../../log.ts'
import { receiptFailure } from '../send/failure-reasons.ts'
import { deliveryCallbackInsert } from '../callbacks/enqueue.ts'
import { receiptsQueue } from './queue.ts'

const BATCH = 1000
const FINAL = `('delivered', 'temporary-failure', 'permanent-failure', 'technical-failure')`
// Notify's statuses a receipt may still change (pending-virus-check is letters only).
const OPEN = `('created', 'sending', 'pending', 'sent')`

interface Receipt { id: string; attempts: number; notification_id: string | null; provider: string; provider_ref: string | null; status: string
  detail: { error_code?: unknown } | null }

export function receiptsEngine(log: Logger): Engine {
  return {
    name: 'receipts',
    batchSize: BATCH,
    // One batch per step, claimed and settled in one transaction: a stop waits for it, then claims no more.
    step: (db, signal) => (signal.aborted ? Promise.resolve({}) : db.transaction(async (tx) => {
      const receipts = await claimInTx<Receipt>(tx, receiptsQueue, BATCH, { returning: 't.notification_id, t.provider, t.provider_ref, t.status, t.detail' })
      if (receipts.length === 0) return {}
      const rows = await tx.query(
        `WITH r AS (SELECT * FROM json_to_recordset($1::json) AS r(id bigint, notification_id uuid, provider text, provider_ref text, status text, last boolean,
                 failure_reason text, failure_code text)),
         target AS (SELECT r.*, n.id AS nid,
                      CASE WHEN r.notification_id IS NULL THEN 'bound' -- found by its own provider and reference
                           WHEN n.provider = r.provider AND (n.provider_ref IS NULL OR n.provider_ref = r.provider_ref
                             OR (r.provider = 'vonage' AND coalesce(n.billable_units, 2) > 1)) THEN 'bound' -- in parts, or parts unknown (crash)
                           WHEN n.provider IS NOT NULL THEN 'refused'
                           WHEN r.last AND n.status = 'sending' AND n.sent_at IS NULL AND coalesce(n.claimed_until < now(), true) THEN 'bound'
                           ELSE 'wait' END AS verdict
                    FROM r JOIN notifications n
                      ON (r.notification_id IS NOT NULL AND n.id = r.notification_id)
                      OR (r.notification_id IS NULL AND n.provider = r.provider AND n.provider_ref = r.provider_ref)),
         best AS (SELECT DISTINCT ON (nid) * FROM target WHERE verdict = 'bound'
                  ORDER BY nid, status IN ${FINAL} DESC, CASE WHEN status IN ${FINAL} THEN id ELSE -id END),
         upd AS (UPDATE notifications n SET status = b.status,
                   -- Why it failed (src/messaging/send/failure-reasons.ts), with the status that says it did.
                   failure_reason = CASE WHEN b.status IN ${FINAL} THEN b.failure_reason ELSE n.failure_reason END,
                   failure_code = CASE WHEN b.status IN ${FINAL} THEN b.failure_code ELSE n.failure_code END,
                   provider = coalesce(n.provider, b.provider), provider_ref = coalesce(n.provider_ref, b.provider_ref),
                   completed_at = CASE WHEN b.status IN ${FINAL} THEN now() ELSE n.completed_at END, updated_at = now()
                 FROM best b WHERE n.id = b.nid AND n.key_type <> 'test' AND n.status IN ${OPEN} RETURNING n.id, n.service_id, n.status),
         -- The service's delivery-status callback, queued in the statement that changes the status (callbacks/enqueue.ts).
         cb AS (${deliveryCallbackInsert('upd')})
         SELECT t.id, t.verdict FROM target t`,
        [JSON.stringify(receipts.map((r) => {
          const failure = receiptFailure(r.provider, r.status, detailOf(r.detail)?.error_code)
          return { id: r.id, notification_id: r.notification_id, provider: r.provider, provider_ref: r.provider_ref, status: r.status,
            last: r.attempts + 1 >= receiptsQueue.retry.maxAttempts, failure_reason: failure?.reason ?? null, failure_code: failure?.code ?? null }
        }))])
      const verdict = new Map(rows.map((r) => [String(r.id), r.verdict as string]))
      const bound = receipts.filter((r) => verdict.get(r.id) === 'bound')
      const refused = receipts.filter((r) => verdict.get(r.id) === 'refused')
      const unmatched = receipts.filter((r) => !verdict.has(r.id) || verdict.get(r.id) === 'wait')
      // worker null: these rows are locked by this transaction (claimInTx), not leased.
      await finish(tx, receiptsQueue, null, bound.map((r) => ({ id: r.id })), { delete: true })
      await fail(tx, receiptsQueue, null, refused.map((r) => ({ id: r.id, error: 'not the provider or reference its notification was sent with', permanent: true })))
      const failed = await fail(tx, receiptsQueue, null, unmatched.map((r) => ({ id: r.id, error: 'no notification with this id or provider reference' })))
      const given = new Set(failed.filter((f) => f.failed).map((f) => f.id))
      // Counts and providers only: a receipt's reference is not personal, but it is not needed here either.
      const providers = (rs: Receipt[]) => [...new Set(rs.map((r) => r.provider))]
      if (refused.length) log.warn({ receipts: refused.length, providers: providers(refused) }, 'delivery receipts that do not match what was sent: refused')
      if (given.size) log.warn({ receipts: given.size, providers: providers(unmatched.filter((r) => given.has(r.id))) }, 'delivery receipts for unknown notifications: kept as unknown')
      const counts: Record<string, number> = { applied: bound.length }
      if (unmatched.length - given.size) counts.waiting = unmatched.length - given.size
      if (given.size) counts.unknown = given.size
      if (refused.length) counts.refused = refused.length
      return counts
    })),
  }
}

/** sms_receipts.detail as it came back: an object (jsonb), or its text from a driver that leaves it so. */
function detailOf(d: unknown): { error_code?: unknown } | null {
  if (typeof d === 'string') try { return JSON.parse(d) } catch { return null }
  return typeof d === 'object' && d !== null ? (d as { error_code?: unknown }) : null
}
