/**
 * Ingests one claimed inbox file: identifies its content by SHA-256, checks the header, then streams
 * its rows through ingestBatch. Resumable: the file's counters are the checkpoint, so after a crash
 * the rows already accounted for are skipped and each row is counted exactly once.
 *
 * Outcomes: ingested; already_ingested (the same content came before, under any name);
 * rejected (empty, or an unknown header: recorded on the file); released (asked to stop; resumable).
 */
import { createHash } from 'node:crypto'
import { Transform, type Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import type { Db } from '../db/types.ts'
import type { ObjectStore } from '../storage/index.ts'
import { ingestBatch, prepareBatch, type FileProgress, type RowError, type Tally } from './batch.ts'
import { COLUMNS, headerVersion, type Version } from './eclrs/columns.ts'
import { readRecords, type RawRecord } from './eclrs/records.ts'
import { finish, renew, type InboxFile } from './inbox.ts'
import { ChecksumSet, loadSighted } from './sightings.ts'

export interface IngestOptions {
  workerId: string
  leaseSeconds: number
  batchRows: number
  signal?: AbortSignal
  /** Called after each committed batch. */
  onProgress?: (p: { bytesRead: number; size: number; totals: Tally; rows: number }) => void
}

export interface IngestResult {
  outcome: 'ingested' | 'already_ingested' | 'rejected' | 'released'
  fileId: number
  file: string
  sha256: string
  version: Version | null
  rows: number
  totals: Tally
  /** The first errors found by this run (at most MAX_REPORTED_ERRORS); ingest_errors has every one. */
  errors: RowError[]
  rejection?: string
}

const MAX_REPORTED_ERRORS = 1000

interface FileRow {
  id: number
  status: string
  version: Version | null
  total_rows: number
  new_rows: number
  seen_rows: number
  duplicate_rows: number
  error_rows: number
  by_county: Record<string, Tally>
  error: string | null
}

async function sha256Of(stream: Readable): Promise<Buffer> {
  const hash = createHash('sha256')
  for await (const chunk of stream) hash.update(chunk as Buffer)
  return hash.digest()
}

/** Why a first line is not one of the three headers, pointing at the first column that differs. */
function describeHeader(line: string): string {
  const got = line.trim().split('|')
  const closest = ([1, 2, 3] as Version[]).sort((a, b) => Math.abs(COLUMNS[a].length - got.length) - Math.abs(COLUMNS[b].length - got.length))[0]
  const at = COLUMNS[closest].findIndex((c, i) => c !== got[i])
  // Names the expected column only: a file without its header has a person's data on line 1.
  const where = at === -1 ? `it has ${got.length} columns` : `column ${at + 1} should be ${COLUMNS[closest][at]}`
  return `line 1: unknown header, not the ECLRS v1 (45 columns), v2 (56) or v3 (65) header: closest is v${closest}, but ${where}`
}

export async function ingestFile(db: Db, store: ObjectStore, inbox: InboxFile, opts: IngestOptions): Promise<IngestResult> {
  // The claim is renewed by every batch, and by this timer through the hashing read and any slow
  // stretch, so a live worker never loses its file to another.
  const renewal = setInterval(() => {
    renew(db, inbox.id, opts.workerId, opts.leaseSeconds).catch(() => {})
  }, Math.max(500, (opts.leaseSeconds * 1000) / 3))
  try {
    return await ingestClaimed(db, store, inbox, opts)
  } finally {
    clearInterval(renewal)
  }
}

async function ingestClaimed(db: Db, store: ObjectStore, inbox: InboxFile, opts: IngestOptions): Promise<IngestResult> {
  const first = await store.open(inbox.uri)
  const sha = await sha256Of(first.body)
  // The same version of the object as was hashed, or ObjectChanged, before anything is recorded
  // under this hash: rows are never filed under another content's identity.
  const { body: source } = await store.open(inbox.uri, first.version)
  let file: FileRow
  try {
    ;[file] = await db.query<FileRow>(
      `WITH added AS (
         INSERT INTO files (sha256, name, size) VALUES ($1, $2, $3) ON CONFLICT (sha256) DO NOTHING RETURNING *
       ) SELECT * FROM added UNION ALL SELECT * FROM files WHERE sha256 = $1 AND NOT EXISTS (SELECT 1 FROM added)`,
      [sha, inbox.uri, inbox.size],
    )
  } catch (err) {
    source.destroy()
    throw err
  }
  const totals: Tally = { new: file.new_rows, seen: file.seen_rows, duplicate: file.duplicate_rows, error: file.error_rows }
  const result: IngestResult = {
    outcome: 'ingested', fileId: file.id, file: inbox.uri, sha256: sha.toString('hex'), version: file.version,
    rows: file.total_rows, totals, errors: [],
  }
  if (file.status !== 'ingesting') {
    source.destroy()
    await finish(db, inbox.id, opts.workerId, file.id, 'already_ingested')
    return { ...result, outcome: 'already_ingested', rejection: file.error ?? undefined }
  }

  let bytesRead = 0
  const counter = new Transform({
    transform(chunk: Buffer, _enc, done) {
      bytesRead += chunk.length
      done(null, chunk)
    },
  })
  const piping = pipeline(source, counter).catch((err) => counter.destroy(err))
  const records = readRecords(counter)
  try {
    const header = await records.next()
    const version = header.done ? undefined : headerVersion(header.value.fields.join('|'))
    if (!version) {
      const reason = header.done ? 'empty file: there is no header line' : describeHeader(header.value.bytes.toString('latin1'))
      await db.transaction(async (tx) => {
        await tx.query(`UPDATE files SET status = 'rejected', error = $2, finished_at = now() WHERE id = $1`, [file.id, reason])
        await finish(tx, inbox.id, opts.workerId, file.id, 'rejected')
      })
      return { ...result, outcome: 'rejected', rejection: reason }
    }
    if (file.version === null) await db.query('UPDATE files SET version = $2 WHERE id = $1', [file.id, version])
    result.version = version

    const progress: FileProgress = {
      fileId: file.id, version, inboxId: inbox.id, workerId: opts.workerId, leaseSeconds: opts.leaseSeconds,
      accounted: file.total_rows, totals, byCounty: file.by_county,
      sighted: file.total_rows > 0 ? await loadSighted(db, file.id) : new ChecksumSet(),
    }
    let skip = file.total_rows // rows a previous run already committed
    let batch: RawRecord[] = []
    let inFlight: Promise<void> | undefined
    // One batch is written while the next is parsed: the database and this process work at once.
    const submit = async (records: RawRecord[]) => {
      const prepared = prepareBatch(records, version)
      await inFlight
      inFlight = db
        .transaction((tx) => ingestBatch(tx, progress, prepared))
        .then(({ errors }) => {
          result.errors.push(...errors.slice(0, MAX_REPORTED_ERRORS - result.errors.length))
          opts.onProgress?.({ bytesRead, size: inbox.size, totals: progress.totals, rows: progress.accounted })
        })
      inFlight.catch(() => {}) // observed by the next await
    }
    for await (const record of records) {
      if (skip > 0) {
        skip--
        continue
      }
      batch.push(record)
      if (batch.length >= opts.batchRows) {
        await submit(batch)
        batch = []
        if (opts.signal?.aborted) {
          await inFlight
          return { ...result, outcome: 'released', rows: progress.accounted }
        }
      }
    }
    if (batch.length > 0) await submit(batch)
    await inFlight
    await db.transaction(async (tx) => {
      await tx.query(`UPDATE files SET status = 'ingested', finished_at = now() WHERE id = $1 AND total_rows = $2`, [file.id, progress.accounted])
      await finish(tx, inbox.id, opts.workerId, file.id, 'ingested')
    })
    return { ...result, rows: progress.accounted }
  } finally {
    await records.return(undefined)
    source.destroy()
    await piping
  }
}

