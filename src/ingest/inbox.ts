/**
 * The inbox: objects found in the watched location (or named to `herald ingest`), each claimed by
 * one worker at a time. A claim is a lease renewed by every committed batch; a worker that dies
 * stops renewing, and after the lease another worker resumes the file from its checkpoint.
 */
import type { Db, Queryable } from '../db/types.ts'
import type { ObjectStore, StoredObject } from '../storage/index.ts'

export interface InboxFile {
  id: number
  uri: string
  size: number
  attempts: number
}

/** A file that fails this many times is left failed, with its error, for a person to look at. */
export const MAX_ATTEMPTS = 5

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
 * Claims the next file in order, or nothing. The earliest unfinished file decides: a file whose
 * worker died (lease run out) is resumed; a waiting file is taken; but while it is held by a live
 * worker, or backing off after a failure, no later file goes ahead of it. `only` names files a
 * person asked for (`herald ingest`): those are also taken out of a backoff or out of `failed`.
 * `exclusive`: this process holds the database alone (embedded PGlite), so any other claim is dead.
 */
export async function claim(
  db: Db, workerId: string, leaseSeconds: number, only?: number[], exclusive = false,
): Promise<InboxFile | undefined> {
  return db.transaction(async (tx) => {
    // Held to the end of this transaction: claims are decided one after another, each seeing the last.
    await tx.query('SELECT pg_advisory_xact_lock($1)', [CLAIM_LOCK])
    // A worker that died during every attempt (killed, out of memory) must not take down the next one.
    await tx.query(
      `UPDATE inbox_files SET state = 'failed', claimed_by = NULL, lease_until = NULL,
              error = 'its worker stopped during each of ' || attempts || ' attempts (killed, or out of memory?)'
        WHERE state = 'claimed' AND (lease_until < now() OR $2) AND attempts >= $1`,
      [MAX_ATTEMPTS, exclusive],
    )
    const [next] = await tx.query<{ id: number; state: string; expired: boolean; backing_off: boolean }>(
      `SELECT id, state, lease_until < now() OR $2 AS expired, state = 'pending' AND lease_until > now() AS backing_off
         FROM inbox_files
        WHERE state IN ('pending', 'claimed') OR state = 'failed' AND id = ANY($1::bigint[])
        ORDER BY id LIMIT 1`,
      [only ?? null, exclusive],
    )
    if (!next) return undefined
    if (next.state === 'claimed' && !next.expired) return undefined // another worker is on it
    if (next.backing_off && !only?.includes(next.id)) return undefined // later files wait for it
    const [file] = await tx.query<InboxFile>(
      `UPDATE inbox_files SET state = 'claimed', claimed_by = $2, lease_until = now() + make_interval(secs => $3),
              attempts = attempts + 1, error = NULL
        WHERE id = $1
        RETURNING id, uri, size, attempts`,
      [next.id, workerId, leaseSeconds],
    )
    return file
  })
}

/** Extends this worker's claim; false when it no longer holds it. */
export async function renew(db: Queryable, id: number, workerId: string, leaseSeconds: number): Promise<boolean> {
  const rows = await db.query(
    `UPDATE inbox_files SET lease_until = now() + make_interval(secs => $3) WHERE id = $1 AND claimed_by = $2 RETURNING id`,
    [id, workerId, leaseSeconds],
  )
  return rows.length > 0
}

/** Records the outcome, if this worker still holds the claim. */
export async function finish(db: Queryable, id: number, workerId: string, fileId: number, outcome: 'ingested' | 'already_ingested' | 'rejected') {
  await db.query(
    `UPDATE inbox_files SET state = 'done', outcome = $4, file_id = $3, claimed_by = NULL, lease_until = NULL, error = NULL
      WHERE id = $1 AND claimed_by = $2`,
    [id, workerId, fileId, outcome],
  )
}

/** Gives a claimed file back (graceful stop): it resumes from its checkpoint before any later file. */
export async function release(db: Db, ids: number[], workerId: string) {
  if (ids.length === 0) return
  await db.query(
    `UPDATE inbox_files SET state = 'pending', claimed_by = NULL, lease_until = NULL, attempts = greatest(attempts - 1, 0)
      WHERE id = ANY($1::bigint[]) AND state = 'claimed' AND claimed_by = $2`,
    [ids, workerId],
  )
}

/**
 * After a failure: retry later with backoff, or give up and leave the file visibly failed.
 * 'conflict' when this worker no longer holds the claim (another has the file now).
 */
export async function fail(db: Db, file: InboxFile, workerId: string, error: string): Promise<'retry' | 'failed' | 'conflict'> {
  const final = file.attempts >= MAX_ATTEMPTS
  const rows = await db.query(
    `UPDATE inbox_files SET state = $2, error = $3, claimed_by = NULL,
            lease_until = CASE WHEN $2 = 'pending' THEN now() + make_interval(secs => $4) END
      WHERE id = $1 AND claimed_by = $5 RETURNING id`,
    [file.id, final ? 'failed' : 'pending', error, 2 ** file.attempts * 5, workerId],
  )
  if (rows.length === 0) return 'conflict'
  return final ? 'failed' : 'retry'
}
