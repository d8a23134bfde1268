/** A service's Reply-To addresses (GOV.UK Notify's email_reply_to): the default one, or the one a request names by id. */
import { randomUUID } from 'node:crypto'
import type { Queryable } from '../../db/types.ts'
import { checkEmail } from './address.ts'

export interface ReplyTo { id: string; serviceId: string; emailAddress: string; isDefault: boolean }

const row = (r: Record<string, any>): ReplyTo => ({ id: r.id, serviceId: r.service_id, emailAddress: r.email_address, isDefault: r.is_default })

/** Adds an address; the first a service has (or one made the default) is its default. */
export async function addReplyTo(db: Queryable, serviceId: string, address: string, makeDefault = false): Promise<ReplyTo> {
  const e = checkEmail(address)
  if (!e.ok) throw new Error(`${address}: ${e.message}`)
  const [{ n }] = await db.query(`SELECT count(*)::int AS n FROM service_email_reply_to WHERE service_id = $1`, [serviceId])
  const isDefault = makeDefault || n === 0
  if (isDefault) await db.query(`UPDATE service_email_reply_to SET is_default = false WHERE service_id = $1 AND is_default`, [serviceId])
  const [r] = await db.query(`INSERT INTO service_email_reply_to (id, service_id, email_address, is_default) VALUES ($1, $2, $3, $4) RETURNING *`,
    [randomUUID(), serviceId, e.address, isDefault])
  return row(r)
}

export async function replyTosOf(db: Queryable, serviceId: string): Promise<ReplyTo[]> {
  return (await db.query(`SELECT * FROM service_email_reply_to WHERE service_id = $1 ORDER BY is_default DESC, created_at`, [serviceId])).map(row)
}

/** The address a request's email_reply_to_id names (none: the default, if any); undefined when the id is not the service's. */
export async function replyToFor(db: Queryable, serviceId: string, id: string | undefined): Promise<string | null | undefined> {
  const [r] = id
    ? await db.query(`SELECT email_address FROM service_email_reply_to WHERE service_id = $1 AND id = $2`, [serviceId, id])
    : await db.query(`SELECT email_address FROM service_email_reply_to WHERE service_id = $1 AND is_default`, [serviceId])
  if (!r) return id ? undefined : null
  return r.email_address
}
