/**
 * Polling CommCare for changed patient cases, domain by domain, from a stored cursor: the latest
 * server_date_modified pulled (a full timestamp, not "since midnight"). Each poll starts OVERLAP
 * before it, since CommCare may index a case modified at the same instant after we asked; the
 * versions seen twice are skipped by importCase. A domain's first poll (no cursor yet) starts at
 * `pullSince` (HERALD_COMMCARE_PULL_SINCE, default the last 14 days), not at the domain's whole history.
 *
 * Each domain's cursor is a schedule row of the work queue (inboundQueue, queue.ts): claimed when
 * due (retry_at, the next poll's time, has passed), so one worker polls a domain at a time; after
 * a complete poll the cursor moves and the next poll is due `pollSeconds` later; a failed poll
 * leaves it where it was and backs off. The cursor moves only when a poll has read every page, so
 * a poll cut short (failed, stopped, or its claim lost) is read again.
 */
import type { Db } from '../db/types.ts'
import { claim, fail, finish, heartbeat, release } from '../engine/queue.ts'
import type { CountyTable } from '../link/counties.ts'
import { errorText } from '../log.ts'
import { CommCareError, type CommCareClient } from './client.ts'
import { importCase } from './inbound.ts'
import { inboundQueue } from './queue.ts'

export const OVERLAP_MS = 120_000

export interface PollOptions {
  worker: string
  pollSeconds: number
  pageSize?: number
  /** Where a domain's first poll starts (config.commcare.pullSince); absent: its whole history. */
  pullSince?: Date
  signal?: AbortSignal
}

export interface Cursor {
  domain: string
  upto: string | null
}

/** Every participating domain has its cursor row (due at once when new). */
export async function ensureCursors(db: Db, domains: string[]) {
  await db.query('INSERT INTO commcare_cursors (domain) SELECT unnest($1::text[]) ON CONFLICT DO NOTHING', [domains])
}

/** Claims the cursor of one due domain (of `domains`, when given); undefined when none is due. */
export async function claimCursor(db: Db, worker: string, domains?: string[]): Promise<Cursor | undefined> {
  const [row] = await claim<{ modified_upto: string | null }>(db, inboundQueue, worker, 1,
    domains ? { where: 'domain = ANY($1::text[])', params: [domains], returning: 't.modified_upto' } : { returning: 't.modified_upto' })
  return row && { domain: row.id, upto: row.modified_upto ? new Date(row.modified_upto).toISOString() : null }
}

/**
 * Polls a claimed cursor's domain; returns the import outcomes. A failed poll is recorded (backoff,
 * or a 429's wait) and thrown; a stop between pages gives the cursor back unmoved.
 */
export async function pollCursor(db: Db, client: CommCareClient, cursor: Cursor, counties: CountyTable, opts: PollOptions) {
  const { domain } = cursor
  const since = cursor.upto ? new Date(Date.parse(cursor.upto) - OVERLAP_MS) : opts.pullSince ?? null
  const counts: Record<string, number> = {}
  let upto = cursor.upto
  try {
    for await (const page of client.changedCases(domain, since, opts.pageSize ?? 100)) {
      for (const cc of page) {
        const outcome = await importCase(db, client, cc, domain, counties)
        counts[outcome] = (counts[outcome] ?? 0) + 1
        if (!upto || Date.parse(cc.server_date_modified) > Date.parse(upto)) upto = cc.server_date_modified
      }
      if (opts.signal?.aborted) {
        await release(db, inboundQueue, opts.worker, [domain])
        return counts
      }
      // A long poll keeps its claim; one lost meanwhile (another worker polls the domain now) ends it here.
      if (!(await heartbeat(db, inboundQueue, opts.worker, [domain])).has(domain)) return counts
    }
  } catch (err) {
    const wait = err instanceof CommCareError && err.rateLimited ? err.retryAfter ?? opts.pollSeconds : undefined
    const status = err instanceof CommCareError ? err.status : undefined
    await fail(db, inboundQueue, opts.worker, [{ id: domain, error: errorText(err), postponeSeconds: wait, detail: status ? { status } : undefined }])
    throw err
  }
  // The cursor moves and the next poll's time (a schedule row's retry_at) is set in the one statement.
  await finish(db, inboundQueue, opts.worker, [{ id: domain, upto, every: opts.pollSeconds }], {
    columns: 'upto timestamptz, every int',
    set: 'modified_upto = coalesce(v.upto, t.modified_upto), polled_at = now(), retry_at = now() + make_interval(secs => v.every)',
  })
  return counts
}

/** Polls one domain if due; returns the import outcomes, or undefined when it was not due. */
export async function pollDomain(db: Db, client: CommCareClient, domain: string, counties: CountyTable, opts: PollOptions) {
  await ensureCursors(db, [domain])
  const cursor = await claimCursor(db, opts.worker, [domain])
  return cursor ? pollCursor(db, client, cursor, counties, opts) : undefined
}
