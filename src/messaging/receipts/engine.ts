/**
 * The receipts engine applies stored delivery receipts to their notifications, a batch per
 * transaction: the batch is claimed inside it (claimInTx: the transaction is the lease; a crash
 * rolls it back and the receipts are due again). A final status (delivered, a failure) is never
 * undone by a later non-final one (pending), whatever order they came in; the same receipt twice
 * changes nothing. An applied receipt is deleted. One whose notification is not found (it may have
 * outrun the recording of its send) fails through the queue: tried again with the spec's backoff,
 * then kept as unknown (failed_at), logged and counted.
 */
import type { Engine } from '../../engine/engine.ts'
import { claimInTx, fail, finish } from '../../engine/queue.ts'
import type { Logger } from '../../log.ts'
import { receiptsQueue } from './queue.ts'

const BATCH = 1000
const FINAL = `('delivered', 'temporary-failure', 'permanent-failure', 'technical-failure')`

interface Receipt { id: string; attempts: number; notification_id: string | null; provider: string; provider_ref: string | null; status: string }

export function receiptsEngine(log: Logger): Engine {
  return {
    name: 'receipts',
    batchSize: BATCH,
    // One batch per step, claimed and settled in one transaction: a stop waits for it, then claims no more.
    step: (db, signal) => (signal.aborted ? Promise.resolve({}) : db.transaction(async (tx) => {
      const receipts = await claimInTx<Receipt>(tx, receiptsQueue, BATCH, { returning: 't.notification_id, t.provider, t.provider_ref, t.status' })
      if (receipts.length === 0) return {}
      // Per notification, the receipt that wins: a final status over a non-final one, then the latest.
      const applied = await tx.query(
        `WITH r AS (SELECT * FROM json_to_recordset($1::json) AS r(id bigint, notification_id uuid, provider text, provider_ref text, status text)),
         target AS (SELECT r.*, n.id AS nid FROM r JOIN notifications n
                      ON (r.notification_id IS NOT NULL AND n.id = r.notification_id)
                      OR (r.notification_id IS NULL AND n.provider = r.provider AND n.provider_ref = r.provider_ref)),
         best AS (SELECT DISTINCT ON (nid) * FROM target ORDER BY nid, status IN ${FINAL} DESC, id DESC),
         upd AS (UPDATE notifications n SET
                   status = CASE WHEN n.status IN ${FINAL} AND b.status NOT IN ${FINAL} THEN n.status ELSE b.status END,
                   provider = coalesce(n.provider, b.provider), provider_ref = coalesce(n.provider_ref, b.provider_ref),
                   completed_at = CASE WHEN b.status IN ${FINAL} AND n.status <> b.status THEN now() ELSE n.completed_at END,
                   updated_at = now()
                 FROM best b WHERE n.id = b.nid AND n.key_type <> 'test' RETURNING n.id)
         SELECT t.id FROM target t`,
        [JSON.stringify(receipts.map((r) => ({ id: r.id, notification_id: r.notification_id, provider: r.provider, provider_ref: r.provider_ref, status: r.status })))])
      const matched = new Set(applied.map((r) => String(r.id)))
      const unmatched = receipts.filter((r) => !matched.has(r.id))
      // worker null: these rows are locked by this transaction (claimInTx), not leased.
      await finish(tx, receiptsQueue, null, [...matched].map((id) => ({ id })), { delete: true })
      const failed = await fail(tx, receiptsQueue, null, unmatched.map((r) => ({ id: r.id, error: 'no notification with this id or provider reference' })))
      const given = new Set(failed.filter((f) => f.failed).map((f) => f.id))
      if (given.size) {
        // Counts and providers only: a receipt's reference is not personal, but it is not needed here either.
        log.warn({ receipts: given.size, providers: [...new Set(unmatched.filter((r) => given.has(r.id)).map((r) => r.provider))] },
          'delivery receipts for unknown notifications: kept as unknown')
      }
      const counts: Record<string, number> = { applied: matched.size }
      if (unmatched.length - given.size) counts.waiting = unmatched.length - given.size
      if (given.size) counts.unknown = given.size
      return counts
    })),
  }
}
