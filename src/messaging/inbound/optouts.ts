/**
 * Opt-outs: a resident who texts one of the US carriers' opt-out keywords to a service's inbound
 * number is not texted by that service again until they text an opt-in keyword. Recorded per service
 * and number (keyed hash; the number sealed beside it for the service's managers), read by every way
 * a text is made or sent:
 *   the API and the console's one-off  refused at admission (admit.ts: 400 OPTED_OUT)
 *   a bulk job's rows                  refused at the upload's check, row by row (upload.ts)
 *   a text made before the opt-out     not handed over: permanent-failure, failure_reason 'opted out' (send engine)
 *   exposure notification              not sent, reason opted_out, if opted out of ANY service (exposure/check.ts, issue.ts)
 */
import type { Db, Queryable } from '../../db/types.ts'
import type { Sealer } from '../../privacy/seal.ts'
import { csvLine } from '../../util/csv.ts'

/** The words that opt out, and those that opt back in, as the US carriers (CTIA) define them: the whole text, any case. */
export const OPT_OUT_WORDS = ['STOP', 'STOPALL', 'UNSUBSCRIBE', 'CANCEL', 'END', 'QUIT'] as const
export const OPT_IN_WORDS = ['START', 'UNSTOP'] as const

/** The API's message for a text to an opted-out number (a 400 BadRequestError), and a job row's problem. */
export const OPTED_OUT = 'The recipient has opted out of texts from this service (replied STOP)'
/** A notification's failure_reason when the opt-out came after it was accepted. */
export const OPTED_OUT_REASON = 'opted out'

/** What a received text asks: 'out', 'in', or nothing (an ordinary reply). */
export function keywordOf(body: string): { action: 'out' | 'in'; keyword: string } | undefined {
  const word = body.trim().toUpperCase()
  if ((OPT_OUT_WORDS as readonly string[]).includes(word)) return { action: 'out', keyword: word }
  if ((OPT_IN_WORDS as readonly string[]).includes(word)) return { action: 'in', keyword: word }
  return undefined
}

/** Records an opt-out (the first one's date stands while it lasts). In the caller's transaction. */
export async function optOut(tx: Queryable, sealer: Sealer, serviceId: string, e164: string, keyword: string, receivedTextId: string | null) {
  await tx.query(
    `INSERT INTO sms_opt_outs (service_id, number_hash, number_ct, keyword, received_text_id) VALUES ($1, $2, $3, $4, $5)
     ON CONFLICT (service_id, number_hash) DO NOTHING`, [serviceId, sealer.hash(e164), sealer.seal(e164), keyword, receivedTextId])
}

/** Removes an opt-out (the resident texted START); true if there was one. */
export async function optIn(tx: Queryable, sealer: Sealer, serviceId: string, e164: string): Promise<boolean> {
  return (await tx.query(`DELETE FROM sms_opt_outs WHERE service_id = $1 AND number_hash = $2 RETURNING 1`, [serviceId, sealer.hash(e164)])).length > 0
}

/**
 * The hashes (hex) opted out of a service: a bulk job's check reads them once for all its rows. A
 * service's opt-outs are few beside its texts; at a million they would be ~100 MB for the check.
 */
export async function optedOutSet(db: Queryable, serviceId: string): Promise<Set<string>> {
  const rows = await db.query(`SELECT encode(number_hash, 'hex') AS h FROM sms_opt_outs WHERE service_id = $1`, [serviceId])
  return new Set(rows.map((r) => r.h as string))
}

/** Of these number hashes, those opted out of any service (hex): exposure notification's rule. */
export async function optedOutAnywhere(db: Queryable, hashes: Buffer[]): Promise<Set<string>> {
  if (hashes.length === 0) return new Set()
  const rows = await db.query(`SELECT DISTINCT encode(number_hash, 'hex') AS h FROM sms_opt_outs WHERE number_hash = ANY($1::bytea[])`, [hashes])
  return new Set(rows.map((r) => r.h as string))
}

export interface OptOutRow { number: string | null; keyword: string; optedOutAt: Date }

/** A service's opt-outs, newest first; numbers opened only when `withNumbers` (the console shows them to its managers). */
export async function listOptOuts(db: Db, sealer: Sealer, serviceId: string, opts: { withNumbers: boolean; limit?: number; offset?: number }) {
  const [{ n }] = await db.query(`SELECT count(*)::int AS n FROM sms_opt_outs WHERE service_id = $1`, [serviceId])
  const rows = await db.query(
    `SELECT number_ct, keyword, opted_out_at FROM sms_opt_outs WHERE service_id = $1 ORDER BY opted_out_at DESC, number_hash LIMIT $2 OFFSET $3`,
    [serviceId, opts.limit ?? 100, opts.offset ?? 0])
  const open = (ct: Buffer | Uint8Array) => sealer.open(Buffer.isBuffer(ct) ? ct : Buffer.from(ct))
  return {
    total: n as number,
    rows: rows.map((r): OptOutRow => ({ number: opts.withNumbers ? open(r.number_ct) : null, keyword: r.keyword, optedOutAt: new Date(r.opted_out_at) })),
  }
}

/** The service's opt-outs as CSV (number, keyword, when, in UTC), every cell through the shared writer. */
export async function* optOutsCsv(db: Db, sealer: Sealer, serviceId: string): AsyncGenerator<string> {
  yield csvLine(['Phone number', 'Keyword', 'Opted out at'])
  for (let offset = 0; ; offset += 1000) {
    const { rows } = await listOptOuts(db, sealer, serviceId, { withNumbers: true, limit: 1000, offset })
    if (rows.length === 0) return
    yield rows.map((r) => csvLine([r.number ?? '', r.keyword, r.optedOutAt.toISOString()])).join('')
  }
}
