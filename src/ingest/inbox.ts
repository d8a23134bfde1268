/**
 * The inbox: objects found in the watched location (or named to `herald ingest`), each claimed by
 * one worker at a time through the work queue (src/engine/queue.ts, spec in queue.ts). A claim is a
 * lease renewed by every committed batch; a worker that dies stops renewing, and after the lease
 * another worker resumes the file from its checkpoint.
 */
import type { Db, Queryable } from '../db/types.ts'
import { claim as claimRows, fail as failRows, finish as finishRows, heartbeat, release as releaseRows, retry } from '../engine/queue.ts'
import type { ObjectStore, StoredObject } from '../storage/index.ts'
import { inboxQueue } from './queue.ts'

export interface InboxFile {
  id: number
  uri: string
  size: number
  /** Attempts spent before this claim (failures, and workers that died holding it). */
  attempts: number
}

/** The claim of an inbox file is no longer this worker's: the worker that holds it now records the outcome. */
export class IngestConflict extends Error {
  constructor(message: string) {
    super(message)
    this.name = 'IngestConflict'
  }
}

/** Records objects not seen before; returns the ids of the given objects (new or known), in their order. */
export async function register(db: Queryable, objects: StoredObject[]): Promise<number[]> {
  if (objects.length === 0) return []
  const rows = await db.query<{ id: number | null }>(
    `WITH found AS (
       SELECT * FROM unnest($1::text[], $2::bigint[], $3::timestamptz[]) WITH ORDINALITY AS f(uri, size, modified_at, ord)
     ), added AS (
       INSERT INTO inbox_files (uri, size, modified_at) SELECT uri, size, modified_at FROM found
       ON CONFLICT (uri, size, modified_at) DO NOTHING RETURNING id, uri, size, modified_at
     )
     SELECT coalesce(a.id, i.id) AS id FROM found f
       LEFT JOIN added a USING (uri, size, modified_at)
       LEFT JOIN inbox_files i ON (i.uri, i.size, i.modified_at) = (f.uri, f.size, f.modified_at)
      ORDER BY f.ord`,
    [objects.map((o) => o.uri), objects.map((o) => o.size), objects.map((o) => o.modifiedAt.toISOString())],
  )
  // An object registered by another process in the same instant is not visible to this statement.
  if (rows.some((r) => r.id === null)) return register(db, objects)
  return rows.map((r) => r.id!)
}

/** Lists the store and records what is new there. */
export async function discover(db: Queryable, store: ObjectStore): Promise<number> {
  const batch: StoredObject[] = []
  let count = 0
  for await (const object of store.list()) {
    batch.push(object)
    if (batch.length === 1000) count += (await register(db, batch.splice(0))).length
  }
  return count + (await register(db, batch)).length
}

// Files are ingested one at a time, in the order they were found: exports are cumulative
// snapshots, and "last seen" and "duplicate inside this file" are only exact when no other file's
// rows are interleaved with a file's own (a file that crashed is resumed before any later one
// starts). Identity decisions were serialised anyway, so this costs next to nothing.
const CLAIM_LOCK = 0x68636c6d

/**
 * Claims the next file in order, or nothing. The earliest unfinished file (the head of the line)
 * decides: a file whose worker died (lease run out) is resumed; a waiting file is taken; but while
 * it is held by a live worker, or backing off after a failure, no later file goes ahead of it.
 * `only` names files a person asked for (`herald ingest`): those that failed are put back in line.
 * `exclusive`: this process holds the database alone (embedded PGlite), so any other claim is dead.
 */
export async function claim(
  db: Db, workerId: string, leaseSeconds: number, only?: number[], exclusive = false,
): Promise<InboxFile | undefined> {
  const spec = { ...inboxQueue, leaseSeconds } // HERALD_CLAIM_LEASE_SECONDS
  return db.transaction(async (tx) => {
    // Held to the end of this transaction: claims are decided one after another, each seeing the last.
    await tx.query('SELECT pg_advisory_xact_lock($1)', [CLAIM_LOCK])
    if (only?.length) await retry(tx, inboxQueue, only.map(String), 'herald ingest')
    for (;;) {
      const [head] = await tx.query<{ id: number; claimed_by: string | null; live: boolean | null }>(
        `SELECT id, claimed_by, claimed_until >= now() AS live FROM inbox_files
          WHERE (${inboxQueue.ready}) AND failed_at IS NULL ORDER BY ${inboxQueue.order} LIMIT 1`)
      if (!head) return undefined
      // No other process can reach this database: whoever holds the lease is dead. Its lease ends
      // now (a heartbeat of negative length, through the queue), so the claim below takes the file
      // as one whose worker died, spending an attempt.
      if (exclusive && head.live && head.claimed_by) await heartbeat(tx, inboxQueue, head.claimed_by, [String(head.id)], -1)
      // Only the head may be claimed: not due (held by a live worker, backing off) means nothing is.
      const [file] = await claimRows<{ uri: string; size: number }>(tx, spec, workerId, 1,
        { where: 'id = $1', params: [head.id], returning: 't.uri, t.size' })
      if (file) return { id: Number(file.id), uri: file.uri, size: Number(file.size), attempts: file.attempts }
      // Not taken: still waiting its turn, or failed just now because its workers died during
      // every attempt (claim fails such a file), and then the next file is the head.
      const [now] = await tx.query<{ failed: boolean }>('SELECT failed_at IS NOT NULL AS failed FROM inbox_files WHERE id = $1', [head.id])
      if (!now.failed) return undefined
    }
  })
}

/** Extends this worker's claim; false when it no longer holds it. */
export async function renew(db: Queryable, id: number, workerId: string, leaseSeconds: number): Promise<boolean> {
  return (await heartbeat(db, inboxQueue, workerId, [String(id)], leaseSeconds)).has(String(id))
}

/** Records the outcome, only while this worker holds the claim; IngestConflict otherwise. */
export async function finish(db: Queryable, id: number, workerId: string, fileId: number, outcome: 'ingested' | 'already_ingested' | 'rejected') {
  const done = await finishRows(db, inboxQueue, workerId, [{ id: String(id), file_id: fileId, outcome }],
    { columns: 'file_id bigint, outcome text', set: `state = 'done', outcome = v.outcome, file_id = v.file_id` })
  if (done.size === 0) throw new IngestConflict(`inbox file ${id} is no longer claimed by this worker`)
}

/** Gives claimed files back (graceful stop): each resumes from its checkpoint before any later file, no attempt spent. */
export async function release(db: Queryable, ids: number[], workerId: string) {
  await releaseRows(db, inboxQueue, workerId, ids.map(String))
}

/**
 * After a failure: retry later with the spec's backoff, or give up and leave the file visibly
 * failed. 'conflict' when this worker no longer holds the claim (another has the file now).
 */
export async function fail(db: Queryable, file: InboxFile, workerId: string, error: string): Promise<'retry' | 'failed' | 'conflict'> {
  const [r] = await failRows(db, inboxQueue, workerId, [{ id: String(file.id), error }])
  return !r ? 'conflict' : r.failed ? 'failed' : 'retry'
}
