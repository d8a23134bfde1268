/**
 * The receipts engine applies stored delivery receipts to their notifications, a batch per
 * transaction. A final status (delivered, a failure) is never undone by a later non-final one
 * (pending), whatever order they came in; the same receipt twice changes nothing. A receipt whose
 * notification is not found is tried again a few times, then kept as unknown, logged and counted.
 */
import type { BatchEngine } from '../../engine/engine.ts'
import type { Logger } from '../../log.ts'

const BATCH = 1000
const MAX_ATTEMPTS = 5
const FINAL = `('delivered', 'temporary-failure', 'permanent-failure', 'technical-failure')`

export function receiptsEngine(log: Logger): BatchEngine {
  return {
    name: 'receipts',
    batchSize: BATCH,
    step: (db) => db.transaction(async (tx) => {
      const receipts = await tx.query(
        `SELECT id, notification_id, provider, provider_ref, status, attempts FROM sms_receipts
         WHERE unknown_at IS NULL AND (retry_at IS NULL OR retry_at <= now()) ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED`, [BATCH])
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
      const unmatched = receipts.filter((r) => !matched.has(String(r.id)))
      await tx.query('DELETE FROM sms_receipts WHERE id = ANY($1::bigint[])', [[...matched]])
      const given = unmatched.filter((r) => r.attempts + 1 >= MAX_ATTEMPTS)
      if (unmatched.length) {
        await tx.query(
          `UPDATE sms_receipts SET attempts = attempts + 1, retry_at = now() + make_interval(secs => 5 * power(2, attempts)),
             unknown_at = CASE WHEN attempts + 1 >= $2 THEN now() END WHERE id = ANY($1::bigint[])`, [unmatched.map((r) => r.id), MAX_ATTEMPTS])
      }
      if (given.length) log.warn({ receipts: given.length, providers: [...new Set(given.map((r) => r.provider))] }, 'delivery receipts for unknown notifications: kept as unknown')
      const counts: Record<string, number> = { applied: matched.size }
      if (unmatched.length - given.length) counts.waiting = unmatched.length - given.length
      if (given.length) counts.unknown = given.length
      return counts
    }),
  }
}
