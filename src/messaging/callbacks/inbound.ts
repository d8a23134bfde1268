/**
 * The received-text callback's body, GOV.UK Notify's send-inbound-sms: {id, source_number,
 * destination_number, message, date_received}, built by the inbound module (inboundCallbackBody) from
 * the received text a callback row names, its number and content opened for the call only.
 */
import type { Queryable } from '../../db/types.ts'
import type { Sealer } from '../../privacy/seal.ts'
import { inboundCallbackBody } from '../inbound/receive.ts'

/** A body to send, or why there is none (a permanent failure). */
export type Body = { body: object } | { none: string }

/** The bodies of these received texts, by id; one no longer kept (retention) is missing from the map. */
export async function inboundBodies(db: Queryable, sealer: Sealer, ids: string[]): Promise<Map<string, Body>> {
  const out = new Map<string, Body>()
  for (const id of new Set(ids)) {
    const body = await inboundCallbackBody(db, sealer, id)
    if (body) out.set(id, { body })
  }
  return out
}
