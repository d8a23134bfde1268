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
  const rows = await db.query<{ id: number }>(
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
  return rows.map((r) => r.id)
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

/**
 * Claims up to `limit` files that are waiting, or whose holder's lease ran out (it died).
 * `only` restricts the claim to given ids: `herald ingest` names files a person asked for, so it
 * also takes them out of a retry backoff, or out of `failed`.
 */
export async function claim(db: Queryable, workerId: string, leaseSeconds: number, limit: number, only?: number[]): Promise<InboxFile[]> {
  return db.query<InboxFile>(
    `UPDATE inbox_files SET state = 'claimed', claimed_by = $1, lease_until = now() + make_interval(secs => $2),
            attempts = attempts + 1
      WHERE id IN (
        SELECT id FROM inbox_files
         WHERE CASE WHEN $4::bigint[] IS NULL
                 THEN state = 'pending' AND (lease_until IS NULL OR lease_until < now())
                 ELSE id = ANY($4::bigint[]) AND state IN ('pending', 'failed')
               END
            OR state = 'claimed' AND lease_until < now() AND ($4::bigint[] IS NULL OR id = ANY($4::bigint[]))
         ORDER BY id
         LIMIT $3
         -- SKIP LOCKED: workers polling together each take different files instead of queueing.
         FOR UPDATE SKIP LOCKED)
      RETURNING id, uri, size, attempts`,
    [workerId, leaseSeconds, limit, only ?? null],
  )
}

export async function finish(db: Queryable, id: number, fileId: number, outcome: 'ingested' | 'already_ingested' | 'rejected') {
  await db.query(
    `UPDATE inbox_files SET state = 'done', outcome = $3, file_id = $2, claimed_by = NULL, lease_until = NULL, error = NULL
      WHERE id = $1`,
    [id, fileId, outcome],
  )
}

/** Gives a claimed file back (graceful stop): another worker, or this one later, resumes it. */
export async function release(db: Db, ids: number[]) {
  if (ids.length === 0) return
  await db.query(
    `UPDATE inbox_files SET state = 'pending', claimed_by = NULL, lease_until = NULL, attempts = greatest(attempts - 1, 0)
      WHERE id = ANY($1::bigint[]) AND state = 'claimed'`,
    [ids],
  )
}

/** After a failure: retry later with backoff, or give up and leave the file visibly failed. */
export async function fail(db: Db, file: InboxFile, error: string): Promise<'retry' | 'failed'> {
  const final = file.attempts >= MAX_ATTEMPTS
  await db.query(
    `UPDATE inbox_files SET state = $2, error = $3, claimed_by = NULL,
            lease_until = CASE WHEN $2 = 'pending' THEN now() + make_interval(secs => $4) END
      WHERE id = $1`,
    [file.id, final ? 'failed' : 'pending', error, 2 ** file.attempts * 5],
  )
  return final ? 'failed' : 'retry'
}
