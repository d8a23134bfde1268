/**
 * Enqueueing a delivery-status callback, in the statement or transaction that changes the status
 * (STYLE 5): the receipts engine where receipts are applied, the send engine where a text is settled
 * without a receipt (test keys, a refused number, technical-failure) and where it times out.
 *
 * Which statuses: GOV.UK Notify queues a callback on every status update except `pending`
 * (process_sms_client_response_tasks._process_for_status), that is the final statuses and, for texts
 * abroad, `sent`. Test keys too: Notify's docs say callbacks work with test API keys.
 */
import type { Queryable } from '../../db/types.ts'

export const CALLBACK_STATUSES = ['sent', 'delivered', 'permanent-failure', 'temporary-failure', 'technical-failure']
const STATUSES_SQL = `(${CALLBACK_STATUSES.map((s) => `'${s}'`).join(', ')})`

/**
 * An INSERT for a CTE (or a statement of its own): a callback row for each notification of `from` (a
 * relation with id, service_id and status, after the update) whose service has a delivery-status callback.
 */
export function deliveryCallbackInsert(from: string): string {
  return `INSERT INTO callback_queue (service_id, kind, subject_id, status)
    SELECT u.service_id, 'delivery_status', u.id, u.status FROM ${from} u
    JOIN service_callbacks c ON c.service_id = u.service_id AND c.kind = 'delivery_status'
    WHERE u.status IN ${STATUSES_SQL}`
}

/** Callback rows for these notifications, as their status now is (call it in the transaction that set it). */
export async function enqueueDeliveryCallbacks(q: Queryable, notificationIds: string[]): Promise<void> {
  if (notificationIds.length === 0) return
  await q.query(`WITH n AS (SELECT id, service_id, status FROM notifications WHERE id = ANY($1::uuid[])) ${deliveryCallbackInsert('n')}`, [notificationIds])
}
