/**
 * What ingest made of its files, for people: each file's totals (`herald files`, the console's files
 * pages), one file's per-county totals and error rows, the inbox's state (`herald inbox`), and a
 * failed file put back in line (`herald queue retry ingest`, the console's retry button).
 */
import type { Queryable } from '../db/types.ts'
import { retry } from '../engine/queue.ts'
import { inboxQueue } from './queue.ts'

export interface FileSummary {
  fileId?: number
  file: string
  sha256: string
  version: number | null
  status: string
  rows: number
  new: number
  seen: number
  duplicate: number
  error: number
  errors: { line: number; reason: string }[]
  rejection?: string
  by_county?: Record<string, unknown>
}

/** One file's totals and every row it could not use (line and reason); undefined for an unknown id. */
export async function fileSummary(db: Queryable, fileId: number, name?: string): Promise<FileSummary | undefined> {
  const [f] = await db.query(
    `SELECT name, encode(sha256, 'hex') AS sha256, version, status, error, total_rows, new_rows, seen_rows,
            duplicate_rows, error_rows, by_county FROM files WHERE id = $1`, [fileId])
  if (!f) return undefined
  const errors = await db.query<{ line: number; reason: string }>(
    'SELECT line, reason FROM ingest_errors WHERE file_id = $1 ORDER BY line', [fileId])
  return {
    fileId, file: name ?? f.name, sha256: f.sha256, version: f.version, status: f.status, rows: f.total_rows, new: f.new_rows,
    seen: f.seen_rows, duplicate: f.duplicate_rows, error: f.error_rows, errors, rejection: f.error ?? undefined,
    by_county: f.by_county,
  }
}

/** A file id as people type it: digits that fit a bigint, else undefined. */
export const fileIdOf = (id: string) => (/^\d{1,15}$/.test(id) ? Number(id) : undefined)

export async function fileExists(db: Queryable, fileId: number): Promise<boolean> {
  return (await db.query('SELECT 1 FROM files WHERE id = $1', [fileId])).length > 0
}

/** Per county totals, in county order (unknown last). */
export function countyTotals(s: FileSummary): { county: string; new: number; seen: number; duplicate: number; error: number }[] {
  const order = (c: string) => (c === 'unknown' ? Infinity : Number(c))
  return (Object.entries(s.by_county ?? {}) as [string, Record<string, number>][])
    .sort(([a], [b]) => order(a) - order(b))
    .map(([county, t]) => ({ county, new: t.new ?? 0, seen: t.seen ?? 0, duplicate: t.duplicate ?? 0, error: t.error ?? 0 }))
}

export interface FileRow {
  id: number
  name: string
  version: number | null
  status: string
  total_rows: number
  new_rows: number
  seen_rows: number
  duplicate_rows: number
  error_rows: number
  by_county: Record<string, unknown>
  started_at: Date
  finished_at: Date | null
  error: string | null
  /** The file's inbox entry failed for good and waits for a retry. */
  failed: boolean
}

/** The newest files first, with their totals (`herald files`). */
export async function listFiles(db: Queryable, limit = 100): Promise<FileRow[]> {
  const rows = await db.query(
    `SELECT f.id, f.name, f.version, f.status, f.total_rows, f.new_rows, f.seen_rows, f.duplicate_rows, f.error_rows, f.by_county,
            f.started_at, f.finished_at, f.error,
            EXISTS (SELECT 1 FROM inbox_files i WHERE ${inboxOfFile('f')} AND i.failed_at IS NOT NULL) AS failed
     FROM files f ORDER BY f.id DESC LIMIT $1`, [limit])
  return rows.map((r) => ({ ...r, id: Number(r.id), started_at: new Date(r.started_at), finished_at: r.finished_at ? new Date(r.finished_at) : null }) as FileRow)
}

/**
 * The inbox entries that hold a file's content: the one that finished it (file_id), and any not
 * finished under the name the content was first found under (a file that failed part-way has its
 * files row, but its inbox entry names it only by uri until it finishes).
 */
const inboxOfFile = (f: string) => `(i.file_id = ${f}.id OR (i.file_id IS NULL AND i.uri = ${f}.name))`

export interface InboxRow {
  id: number
  uri: string
  size: number
  state: 'failed' | 'done' | 'ingesting' | 'retrying' | 'waiting'
  outcome: string | null
  attempts: number
  retry_at: Date | null
  failed_at: Date | null
  file_id: number | null
  last_error: string | null
  found_at: Date
}

/** Everything found in the inbox and what became of it, newest first (`herald inbox`); `failed`: only the failed ones. */
export async function inboxFiles(db: Queryable, opts: { failed?: boolean; limit?: number } = {}): Promise<InboxRow[]> {
  // The state a person cares about, from the engine's own state and the queue's columns.
  const rows = await db.query(
    `SELECT id, uri, size, CASE WHEN failed_at IS NOT NULL THEN 'failed' WHEN state = 'done' THEN 'done'
                                WHEN claimed_until > now() THEN 'ingesting' WHEN retry_at > now() THEN 'retrying' ELSE 'waiting' END AS state,
            outcome, attempts, claimed_by, claimed_until, retry_at, failed_at, file_id, last_error, found_at
       FROM inbox_files WHERE NOT $1 OR failed_at IS NOT NULL ORDER BY id DESC LIMIT $2`,
    [Boolean(opts.failed), opts.limit ?? 100])
  return rows.map((r) => ({ ...r, id: Number(r.id), size: Number(r.size), file_id: r.file_id === null ? null : Number(r.file_id) }) as InboxRow)
}

/**
 * A failed file tried again: its failed inbox entries are due again with their attempts anew
 * (the work queue's retry, a retry_requested event), and the ingest engine resumes the file from
 * its checkpoint. Returns the inbox ids put back (none: nothing of it had failed).
 */
export async function retryFile(db: Queryable, fileId: number, by: string): Promise<string[]> {
  const ids = await db.query<{ id: string }>(
    `SELECT i.id::text AS id FROM inbox_files i JOIN files f ON ${inboxOfFile('f')} WHERE f.id = $1 AND i.failed_at IS NOT NULL`, [fileId])
  return ids.length ? retry(db, inboxQueue, ids.map((r) => r.id), by) : []
}

/** Failed inbox entries (these, or all) tried again: `herald queue retry ingest [ID...]`. */
export const retryInbox = (db: Queryable, ids: string[] | undefined, by: string) => retry(db, inboxQueue, ids, by)
