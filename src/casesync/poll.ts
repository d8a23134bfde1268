/**
 * Polling CommCare for changed patient cases, domain by domain, from a stored cursor: the latest
 * server_date_modified pulled (a full timestamp, not "since midnight"). Each poll starts OVERLAP
 * before it, since CommCare may index a case modified at the same instant after we asked; the
 * versions seen twice are skipped by importCase. A domain is polled by one worker at a time (a
 * lease on its cursor row) and at most every `pollSeconds`. The cursor moves only when a poll has
 * read every page, so a poll cut short is read again.
 */
import type { Db } from '../db/types.ts'
import type { CountyTable } from '../link/counties.ts'
import type { CommCareClient } from './client.ts'
import { importCase } from './inbound.ts'

export const OVERLAP_MS = 120_000
const LEASE_SECONDS = 600

/** Takes the domain's cursor if it is due and no one else holds it; returns where to start, or undefined. */
async function claimCursor(db: Db, domain: string, pollSeconds: number): Promise<{ upto: string | null } | undefined> {
  await db.query('INSERT INTO commcare_cursors (domain) VALUES ($1) ON CONFLICT DO NOTHING', [domain])
  const [row] = await db.query(
    `UPDATE commcare_cursors SET claimed_until = now() + make_interval(secs => $3)
     WHERE domain = $1 AND (claimed_until IS NULL OR claimed_until < now())
       AND (polled_at IS NULL OR polled_at <= now() - make_interval(secs => $2))
     RETURNING modified_upto`, [domain, pollSeconds, LEASE_SECONDS])
  return row ? { upto: row.modified_upto ? new Date(row.modified_upto).toISOString() : null } : undefined
}

/** Polls one domain if due; returns the import outcomes, or undefined when it was not due. */
export async function pollDomain(db: Db, client: CommCareClient, domain: string, counties: CountyTable, pollSeconds: number, pageSize = 100) {
  const cursor = await claimCursor(db, domain, pollSeconds)
  if (!cursor) return undefined
  const since = cursor.upto ? new Date(Date.parse(cursor.upto) - OVERLAP_MS) : null
  const counts: Record<string, number> = {}
  let upto = cursor.upto
  let complete = false
  try {
    for await (const page of client.changedCases(domain, since, pageSize)) {
      for (const cc of page) {
        const outcome = await importCase(db, client, cc, domain, counties)
        counts[outcome] = (counts[outcome] ?? 0) + 1
        if (!upto || Date.parse(cc.server_date_modified) > Date.parse(upto)) upto = cc.server_date_modified
      }
    }
    complete = true
  } finally {
    // A failed poll leaves the cursor where it was, and waits a poll interval.
    await db.query(
      `UPDATE commcare_cursors SET claimed_until = NULL, polled_at = now(), modified_upto = CASE WHEN $3 THEN $2::timestamptz ELSE modified_upto END
       WHERE domain = $1`, [domain, upto, complete])
  }
  return counts
}
