/**
 * A received text, from a provider's webhook (routes.ts) to the tables: its service found by the
 * number it was sent to; stored sealed (received_texts); an opt-out or opt-in keyword recorded
 * (optouts.ts); forwarded to the service's inbound callback (a callback_queue row, sent by the
 * callbacks engine with inboundCallbackBody). All in one transaction, once per provider message:
 * a webhook posted again stores, opts and forwards nothing more.
 * Outcomes: stored (with `optedOut`/`optedIn`), duplicate, or no_service (a number no service has:
 * nothing stored, the provider answered 2xx so that it does not post it for a day).
 */
import type { Db, Queryable } from '../../db/types.ts'
import type { Sealer } from '../../privacy/seal.ts'
import { notificationId } from '../api/admit.ts'
import { notifyTime } from '../api/present.ts'
import { e164Of, serviceOfNumber } from './numbers.ts'
import { keywordOf, optIn, optOut } from './optouts.ts'

export interface Inbound {
  provider: 'twilio' | 'vonage'
  /** Twilio's MessageSid, Vonage's messageId. */
  ref: string | null
  from: string
  to: string
  body: string
  /** When the provider says it came; default now. */
  receivedAt?: Date
}

export type Received =
  | { outcome: 'stored'; id: string; serviceId: string; optedOut: boolean; optedIn: boolean }
  | { outcome: 'duplicate' | 'no_service' | 'bad_number' }

export async function receiveText(db: Db, sealer: Sealer, m: Inbound): Promise<Received> {
  const to = e164Of(m.to)
  const from = e164Of(m.from) ?? m.from.trim()
  if (!to || !from) return { outcome: 'bad_number' }
  return db.transaction(async (tx) => {
    const serviceId = await serviceOfNumber(tx, to)
    if (!serviceId) return { outcome: 'no_service' as const }
    const id = notificationId()
    const [stored] = await tx.query(
      `INSERT INTO received_texts (id, service_id, notify_number, user_number_hash, user_number_ct, content_ct, provider, provider_ref, provider_date)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (provider, provider_ref) DO NOTHING RETURNING id`,
      [id, serviceId, to, sealer.hash(from), sealer.seal(from), sealer.seal(m.body), m.provider, m.ref, m.receivedAt ?? new Date()])
    if (!stored) return { outcome: 'duplicate' as const }
    const word = keywordOf(m.body)
    let optedOut = false
    let optedIn = false
    if (word?.action === 'out') {
      await optOut(tx, sealer, serviceId, from, word.keyword, id)
      optedOut = true
    } else if (word?.action === 'in') optedIn = await optIn(tx, sealer, serviceId, from)
    await forward(tx, serviceId, id)
    return { outcome: 'stored' as const, id, serviceId, optedOut, optedIn }
  })
}

/** Queued for the service's inbound callback, if it has one (callback_queue, migration 024). */
async function forward(tx: Queryable, serviceId: string, id: string) {
  await tx.query(`INSERT INTO callback_queue (service_id, kind, subject_id)
    SELECT $1, 'inbound_sms', $2 WHERE EXISTS (SELECT 1 FROM service_callbacks WHERE service_id = $1 AND kind = 'inbound_sms')`, [serviceId, id])
}

const opened = (sealer: Sealer, ct: Buffer | Uint8Array) => sealer.open(Buffer.isBuffer(ct) ? ct : Buffer.from(ct))

/**
 * GOV.UK Notify's inbound callback body for a received text (send_inbound_sms_to_service), numbers
 * and content opened for the call; null once retention has deleted the text.
 */
export async function inboundCallbackBody(db: Queryable, sealer: Sealer, id: string) {
  const [r] = await db.query(`SELECT id::text, notify_number, user_number_ct, content_ct, provider_date FROM received_texts WHERE id = $1`, [id])
  if (!r) return null
  return {
    id: r.id as string, source_number: opened(sealer, r.user_number_ct), destination_number: r.notify_number as string,
    message: opened(sealer, r.content_ct), date_received: notifyTime(r.provider_date)!,
  }
}

export const RECEIVED_PAGE = 250

/** One page of a service's received texts, newest first, older than `olderThan` (a text's id), as Notify's v2 API presents them. */
export async function receivedTexts(db: Queryable, sealer: Sealer, serviceId: string, olderThan?: string, page = RECEIVED_PAGE) {
  const rows = await db.query(
    `SELECT id::text, service_id::text, notify_number, user_number_ct, content_ct, created_at FROM received_texts r
     WHERE r.service_id = $1 AND ($2::uuid IS NULL OR (r.created_at, r.id) < (SELECT created_at, id FROM received_texts WHERE id = $2 AND service_id = $1))
     ORDER BY r.created_at DESC, r.id DESC LIMIT $3`, [serviceId, olderThan ?? null, page])
  return rows.map((r) => ({
    id: r.id as string, created_at: notifyTime(r.created_at)!, service_id: r.service_id as string, notify_number: r.notify_number as string,
    user_number: opened(sealer, r.user_number_ct), content: opened(sealer, r.content_ct),
  }))
}

/** Retention: a service's received texts older than `cutoff` are deleted, a batch a statement; returns how many. */
export async function deleteReceivedTexts(db: Db, serviceId: string, cutoff: Date, batch: number, stopped: () => boolean): Promise<number> {
  let total = 0
  while (!stopped()) {
    const [{ n }] = await db.query(
      `WITH gone AS (DELETE FROM received_texts WHERE id IN (
         SELECT id FROM received_texts WHERE service_id = $1 AND created_at < $2 LIMIT $3 FOR UPDATE SKIP LOCKED) RETURNING 1)
       SELECT count(*)::int AS n FROM gone`, [serviceId, cutoff, batch])
    if (n === 0) break
    total += n
  }
  return total
}
