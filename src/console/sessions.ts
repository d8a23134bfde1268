/**
 * Console sessions and sign-in throttling. The session cookie carries a random token, signed by
 * @fastify/cookie with a key derived from HERALD_SECRET_KEY; the database keeps only the token's
 * SHA-256, so a copy of the table opens no session. Sessions last 12 hours (GOV.UK Notify signs
 * people out after a working day, 20 hours; 12 is closer to a shift).
 */
import { createHash, randomBytes } from 'node:crypto'
import type { Queryable } from '../db/types.ts'
import { normalEmail } from './users.ts'

export const SESSION_HOURS = 12
/** Failures allowed per email, and per address, in the window before sign-in is refused for it. */
export const THROTTLE = { perEmail: 5, perIp: 50, minutes: 15 }

const digest = (token: string) => createHash('sha256').update(token).digest()

export async function startSession(db: Queryable, userId: string, secondFactor: boolean): Promise<string> {
  const token = randomBytes(32).toString('base64url')
  await db.query(
    `INSERT INTO console_sessions (token_hash, user_id, second_factor, expires_at) VALUES ($1, $2, $3, now() + make_interval(hours => $4))`,
    [digest(token), userId, secondFactor, SESSION_HOURS])
  return token
}

export async function findSession(db: Queryable, token: string): Promise<{ userId: string; secondFactor: boolean } | undefined> {
  const [s] = await db.query<{ user_id: string; second_factor: boolean }>(
    'SELECT user_id, second_factor FROM console_sessions WHERE token_hash = $1 AND expires_at > now()', [digest(token)])
  return s && { userId: s.user_id, secondFactor: s.second_factor }
}

export async function passSecondFactor(db: Queryable, token: string): Promise<void> {
  await db.query('UPDATE console_sessions SET second_factor = true WHERE token_hash = $1', [digest(token)])
}

export async function endSession(db: Queryable, token: string): Promise<void> {
  await db.query('DELETE FROM console_sessions WHERE token_hash = $1 OR expires_at < now()', [digest(token)])
}

/** Minutes to wait before this email (or address) may try again; 0 when it may now. */
export async function throttled(db: Queryable, email: string, ip: string): Promise<number> {
  const [r] = await db.query<{ by_email: number; by_ip: number; oldest: number | null }>(
    `SELECT count(*) FILTER (WHERE email = $1)::int AS by_email, count(*) FILTER (WHERE ip = $2)::int AS by_ip,
            extract(epoch FROM now() - min(at))::float8 AS oldest
     FROM login_failures WHERE (email = $1 OR ip = $2) AND at > now() - make_interval(mins => $3)`, [normalEmail(email), ip, THROTTLE.minutes])
  if (r.by_email < THROTTLE.perEmail && r.by_ip < THROTTLE.perIp) return 0
  return Math.max(1, Math.ceil(THROTTLE.minutes - (r.oldest ?? 0) / 60))
}

export async function recordFailure(db: Queryable, email: string, ip: string): Promise<void> {
  await db.query('INSERT INTO login_failures (email, ip) VALUES ($1, $2)', [normalEmail(email), ip])
}

export async function clearFailures(db: Queryable, email: string): Promise<void> {
  await db.query(`DELETE FROM login_failures WHERE email = $1 OR at < now() - interval '1 day'`, [normalEmail(email)])
}
