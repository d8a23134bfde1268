/**
 * Every view of a person in the console, written to person_access_log (migration 020): who looked,
 * at whom, and how they searched. A search writes what it was by (patient key, name, accession),
 * never the value typed: the log must not become a second copy of the data it protects.
 */
import type { Queryable } from '../db/types.ts'

export type AccessAction = 'search' | 'view person'

/** One entry per person found or viewed; a search that found no one writes one entry without a person. */
export async function logAccess(db: Queryable, userId: string, action: AccessAction, personIds: (string | number)[], detail: object | null = null) {
  const people = personIds.length ? personIds.map(String) : [null]
  await db.query(
    `INSERT INTO person_access_log (user_id, person_id, action, detail) SELECT $1, p::bigint, $2, $3 FROM unnest($4::text[]) AS p`,
    [userId, action, detail, people])
}

/** The log of one person, newest first (for an audit). */
export async function accessesOf(db: Queryable, personId: string | number, limit = 100) {
  return db.query<{ user_id: string; email: string; action: string; detail: unknown; at: Date }>(
    `SELECT l.user_id, u.email, l.action, l.detail, l.at FROM person_access_log l JOIN users u ON u.id = l.user_id
     WHERE l.person_id = $1 ORDER BY l.at DESC, l.id DESC LIMIT $2`, [String(personId), limit])
}
