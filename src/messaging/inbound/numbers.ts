/** A service's inbound numbers: the provider numbers residents text, each belonging to one service. */
import type { Db, Queryable } from '../../db/types.ts'

const E164 = /^\+[1-9]\d{6,14}$/

/** A number as providers give it (Twilio: +12125550100; Vonage: 12125550100) in E.164, or undefined. */
export function e164Of(raw: string | undefined): string | undefined {
  const digits = (raw ?? '').trim().replace(/[\s().-]/g, '')
  const n = digits.startsWith('+') ? digits : `+${digits}`
  return E164.test(n) ? n : undefined
}

export class InboundNumberError extends Error {}

/** Gives a number to a service (moved from another service if it had it: one number, one service). */
export async function setInboundNumber(db: Db, serviceId: string, raw: string): Promise<string> {
  const number = e164Of(raw)
  if (!number) throw new InboundNumberError(`the inbound number must be a phone number in E.164 (+12125550100), not "${raw}"`)
  await db.query(`INSERT INTO inbound_numbers (number, service_id) VALUES ($1, $2)
    ON CONFLICT (number) DO UPDATE SET service_id = excluded.service_id, created_at = now()`, [number, serviceId])
  return number
}

/** Takes a number from its service; true if it had one. */
export async function removeInboundNumber(db: Db, serviceId: string, raw: string): Promise<boolean> {
  const number = e164Of(raw)
  return number ? (await db.query(`DELETE FROM inbound_numbers WHERE number = $1 AND service_id = $2 RETURNING 1`, [number, serviceId])).length > 0 : false
}

export async function inboundNumbersOf(db: Queryable, serviceId: string): Promise<string[]> {
  return (await db.query(`SELECT number FROM inbound_numbers WHERE service_id = $1 ORDER BY number`, [serviceId])).map((r) => r.number)
}

/** The service a number belongs to, or undefined. */
export async function serviceOfNumber(db: Queryable, number: string): Promise<string | undefined> {
  const [r] = await db.query(`SELECT service_id::text AS id FROM inbound_numbers WHERE number = $1`, [number])
  return r?.id
}
