/**
 * One batch of an export's rows → new / seen / duplicate / error, committed in one transaction
 * together with the file's counters, which double as the resume checkpoint.
 *
 * Identity (EXTERNAL_APIS.md §1): a row is seen before when its checksum in the version of an
 * earlier row equals that row's checksum. lab_row_keys holds each stored row's own-version checksum;
 * most rows of an export repeat one of the same version, so the batch is first probed with its own
 * checksums, and only the rest with their other two. A duplicate is an exact repeat of an earlier
 * row of the same file.
 */
import { isUtf8 } from 'node:buffer'
import { HexBytes, type Queryable } from '../db/types.ts'
import { checksums, ownChecksum } from './eclrs/checksum.ts'
import { BASE_COUNT, COLUMNS, VERSIONS, type Version } from './eclrs/columns.ts'
import type { RawRecord } from './eclrs/records.ts'
import { countyOf, LAB_ROW_COLUMNS, typeRow } from './eclrs/row.ts'
import { IngestConflict, renew } from './inbox.ts'
import type { ChecksumSet } from './sightings.ts'

export type Outcome = 'new' | 'seen' | 'duplicate' | 'error'
export const OUTCOMES: Outcome[] = ['new', 'seen', 'duplicate', 'error']

export interface Tally {
  new: number
  seen: number
  duplicate: number
  error: number
}
export const emptyTally = (): Tally => ({ new: 0, seen: 0, duplicate: 0, error: 0 })

export interface RowError {
  line: number
  reason: string
}

export interface FileProgress {
  fileId: number
  version: Version
  inboxId: number
  workerId: string
  leaseSeconds: number
  /** Rows accounted for so far; the database must agree before a batch is added. */
  accounted: number
  totals: Tally
  byCounty: Record<string, Tally>
  /**
   * The keys this file sighted in its committed batches (ingest_sightings, not yet folded into
   * lab_row_keys): a row matching one again is a duplicate. Rebuilt from the database on resume.
   */
  sighted: ChecksumSet
}

// Row identity is one global question (has any file brought this row?). Files already go one at a
// time (see claim in inbox.ts); this lock keeps two batches from ever storing the same new row even
// for a caller that does not go through the claim, at no cost to the one that does.
const IDENTITY_LOCK = 0x68726c64

const hexBytes = (hex: string) => new HexBytes(hex)
const COPY_SLICE = 2500
// NUL cannot be stored in text: an error row keeps U+FFFD in its place (valid rows never hold one).
const rawText = (r: RawRecord) => r.bytes.toString(isUtf8(r.bytes) ? 'utf8' : 'latin1').replaceAll('\0', '\uFFFD')

interface Item {
  record: RawRecord
  county: number | null
  outcome?: Outcome
  reason?: string
  /** The checksum in the file's own version; the other two are computed only if it is not found. */
  own?: string
  /** For a repeat inside the batch: the first occurrence, whose fate it shares if that is an error. */
  firstIndex?: number
  values?: unknown[]
  /** Seen, but in a lower version's form and with values in the columns that version lacks. */
  addsInformation?: boolean
}

// The batch's scratch tables, and the plan settings for its probes. A batch touches a sliver of
// lab_row_keys: probing its index row by row scales with the batch. A hash or merge join, or a scan
// chosen while the table is young and its statistics say it is empty, would read the whole history
// on every batch (seen: one 50,000-row file taking 30 s).
const batchSetup = `
  CREATE TEMP TABLE IF NOT EXISTS ingest_rest (rec int, ck bytea, alt1 bytea, alt2 bytea, new1 bool, new2 bool) ON COMMIT DELETE ROWS;
  SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off; SET LOCAL enable_seqscan = off; SET LOCAL jit = off;`

export interface PreparedBatch {
  items: Item[]
  /** First occurrences inside the batch, in checksum order (index probes in key order are cheaper). */
  candidates: number[]
}

/**
 * The CPU part of a batch, done before its transaction so that it overlaps the database's work on
 * the previous batch: field counts, own-version checksums, repeats inside the batch.
 */
export function prepareBatch(records: RawRecord[], v: Version): PreparedBatch {
  const width = COLUMNS[v].length
  const items: Item[] = records.map((record) => ({ record, county: countyOf(record) }))
  const firstByKey = new Map<string, number>()
  const candidates: number[] = []
  items.forEach((item, i) => {
    const { record } = item
    const reason = record.error
      ?? (record.fieldCount !== width ? `has ${record.fieldCount} fields, the v${v} header has ${width}` : undefined)
      ?? (record.bytes.indexOf(0) !== -1 ? 'holds a NUL byte, which text cannot store' : undefined)
    if (reason) {
      Object.assign(item, { outcome: 'error', reason })
      return
    }
    const key = (item.own = ownChecksum(record))
    const first = firstByKey.get(key)
    if (first !== undefined) {
      item.outcome = 'duplicate'
      item.firstIndex = first
    } else {
      firstByKey.set(key, i)
      candidates.push(i)
    }
  })
  candidates.sort((a, b) => (items[a].own! < items[b].own! ? -1 : 1))
  return { items, candidates }
}

/**
 * Checks that the file is still where this worker left it and still claimed by it, renews the
 * claim, and takes the identity lock. Throws IngestConflict otherwise.
 */
async function lockBatch(tx: Queryable, p: FileProgress): Promise<{ mixed: boolean }> {
  // Round trips are most of a batch's fixed cost on a busy server: the lock and the setup go as one.
  await tx.exec(`SELECT pg_advisory_xact_lock(${IDENTITY_LOCK}); ${batchSetup}`)
  // Rows of another version can only match when rows of another version came before: until then
  // (the usual case, one version in use) the other two checksums are not even computed.
  const [file] = await tx.query<{ total_rows: number; mixed: boolean }>(
    `SELECT total_rows, EXISTS (SELECT 1 FROM files WHERE version <> $2 AND new_rows + seen_rows > 0) AS mixed
       FROM files WHERE id = $1 FOR UPDATE`, [p.fileId, p.version])
  if (file.total_rows !== p.accounted) {
    throw new IngestConflict(`file ${p.fileId} moved from row ${p.accounted} to ${file.total_rows} under another worker`)
  }
  // The ownership check and the lease's renewal are one statement, in the batch's own transaction:
  // its row lock on the inbox row lasts to the commit, so no other worker can claim the file while
  // this batch writes, and a worker whose file was taken over writes nothing.
  if (!(await renew(tx, p.inboxId, p.workerId, p.leaseSeconds))) {
    throw new IngestConflict(`inbox file ${p.inboxId} is no longer claimed by ${p.workerId}`)
  }
  return { mixed: file.mixed }
}

/**
 * Marks as seen the rows whose own-version checksum is stored, recording the sightings; returns the
 * others. A row whose key this file already sighted in an earlier batch is a duplicate.
 */
async function probeOwn(tx: Queryable, p: FileProgress, { items, candidates }: PreparedBatch): Promise<number[]> {
  const probed = candidates.filter((i) => {
    if (!p.sighted.hasHex(items[i].own!)) return true
    items[i].outcome = 'duplicate'
    return false
  })
  // Most rows are seen before: record their sighting (one append each, no UPDATE), and send back
  // only the rows that were not (about 10%). A key last sighted by this file is one of its own rows.
  // The checksums go as parameters, not by COPY: one round trip fewer for every batch.
  const unmatched = await tx.query<{ rec: number }>(
    `WITH probe AS (SELECT rec, decode(ck, 'hex') AS ck FROM unnest($2::int[], $3::text[]) AS p(rec, ck)),
          seen AS (
            INSERT INTO ingest_sightings (file_id, checksum)
            SELECT $1, s.ck FROM probe s JOIN lab_row_keys k ON k.checksum = s.ck WHERE k.last_file_id <> $1
            RETURNING checksum)
     SELECT rec FROM probe WHERE ck NOT IN (SELECT checksum FROM seen)`,
    [p.fileId, probed, probed.map((i) => items[i].own!)],
  )
  const rest = new Set(unmatched.map((r) => r.rec))
  for (const i of probed) {
    if (rest.has(i)) continue
    items[i].outcome = 'seen'
    p.sighted.addHex(items[i].own!)
  }
  return probed.filter((i) => rest.has(i))
}

/**
 * The rows not found by their own checksum. Still stored under it: an exact repeat of an earlier row
 * of this file (duplicate). Matching in another version's form: seen. Otherwise: new.
 */
async function probeRest(tx: Queryable, p: FileProgress, items: Item[], valid: number[], mixed: boolean) {
  if (valid.length === 0) return
  const v = p.version
  if (mixed) {
    const others = ([0, 1, 2] as const).filter((k) => k !== v - 1)
    await tx.copyInto('ingest_rest', ['rec', 'ck', 'alt1', 'alt2', 'new1', 'new2'], valid.map((i) => {
      const sums = checksums(items[i].record, v)
      const [alt1, alt2] = [sums[others[0]], sums[others[1]]]
      return [i, hexBytes(items[i].own!), alt1, alt2, !p.sighted.has(alt1), !p.sighted.has(alt2)]
    }))
    // Earlier rows matched in their own version's form are sighted too, once per file.
    const sighted = await tx.query<{ ck: Uint8Array }>(
      `INSERT INTO ingest_sightings (file_id, checksum)
       SELECT DISTINCT $1::bigint, k.checksum FROM ingest_rest r JOIN lab_row_keys k ON k.checksum IN (r.alt1, r.alt2)
        WHERE k.last_file_id <> $1 AND ((k.checksum = r.alt1 AND r.new1) OR (k.checksum = r.alt2 AND r.new2))
       RETURNING checksum AS ck`, [p.fileId])
    for (const s of sighted) p.sighted.add(Buffer.from(s.ck.buffer, s.ck.byteOffset, s.ck.byteLength))
  } else {
    await tx.copyInto('ingest_rest', ['rec', 'ck'], valid.map((i) => [i, hexBytes(items[i].own!)]))
  }
  const hits = await tx.query<{ rec: number; own: boolean; via1: boolean; via2: boolean }>(
    `SELECT r.rec, bool_or(k.checksum = r.ck) AS own, coalesce(bool_or(k.checksum = r.alt1), false) AS via1,
            coalesce(bool_or(k.checksum = r.alt2), false) AS via2
       FROM ingest_rest r JOIN lab_row_keys k ON k.checksum IN (r.ck, r.alt1, r.alt2) GROUP BY r.rec`)
  const others = VERSIONS.filter((o) => o !== v)
  for (const h of hits) {
    const item = items[h.rec]
    item.outcome = h.own ? 'duplicate' : 'seen'
    // Seen only in the form of lower versions, yet holding values in columns the highest of them
    // lacks (an employer, symptoms): the row adds information, so it is kept for the link engine.
    const highest = Math.max(...others.filter((_, k) => (k === 0 ? h.via1 : h.via2)))
    if (!h.own && highest < v && addsColumns(item.record, highest as Version, v)) item.addsInformation = true
  }
  for (const i of valid) items[i].outcome ??= 'new'
  if (mixed) {
    // "Seen" means matching an earlier row in that row's version, and this row is now an earlier
    // row: record its own checksum too, so that a later row matching it in this version is seen.
    const seen = hits.filter((h) => !h.own).map((h) => h.rec)
    await tx.query(
      `INSERT INTO lab_row_keys (checksum, last_file_id) SELECT ck, $1 FROM ingest_rest WHERE rec = ANY($2::int[])
       ON CONFLICT (checksum) DO NOTHING`, [p.fileId, seen])
  }
}

/** Whether a row of version `own` has a value in any column that version `lower` does not have. */
function addsColumns(record: RawRecord, lower: Version, own: Version): boolean {
  const fields = record.fields
  for (let i = BASE_COUNT[lower]; i < BASE_COUNT[own]; i++) if (fields[i].trim() !== '') return true
  return false
}

/** Stores the kept rows (new, or adding columns); returns the batch's error rows and the kept rows' line range. */
async function store(tx: Queryable, p: FileProgress, items: Item[]) {
  const kept = items.filter((it) => it.outcome === 'new' || it.addsInformation)
  // In slices: the COPY text of a slice, not of the whole batch, is what is in memory at once (a
  // batch of new rows is tens of MB of text; a file of only new rows had peaked at 335 MB).
  for (let i = 0; i < kept.length; i += COPY_SLICE) {
    await tx.copyInto('lab_rows', ['checksum', 'version', 'file_id', 'line', 'raw', 'seen_before', ...LAB_ROW_COLUMNS],
      kept.slice(i, i + COPY_SLICE).map((it) =>
        [hexBytes(it.own!), p.version, p.fileId, it.record.line, rawText(it.record), it.outcome === 'seen', ...it.values!]))
  }
  // A repeat of an error row is the same error, as it would be had it fallen in a later batch.
  for (const item of items) {
    if (item.firstIndex !== undefined && items[item.firstIndex].outcome === 'error') {
      Object.assign(item, { outcome: 'error', reason: items[item.firstIndex].reason })
    }
  }
  const errors = items.filter((it) => it.outcome === 'error')
  await tx.copyInto('ingest_errors', ['file_id', 'line', 'county_fips', 'reason', 'raw'],
    errors.map((it) => [p.fileId, it.record.line, it.county, it.reason, rawText(it.record)]))
  return { errors, lines: kept.length > 0 ? [kept[0].record.line, kept[kept.length - 1].record.line] : [null, null] }
}

export async function ingestBatch(tx: Queryable, p: FileProgress, prepared: PreparedBatch): Promise<{ errors: RowError[] }> {
  const { items } = prepared
  const { mixed } = await lockBatch(tx, p)
  const rest = await probeOwn(tx, p, prepared)
  for (const i of rest) {
    const typed = typeRow(items[i].record, p.version)
    if (typed.ok) items[i].values = typed.values
    else Object.assign(items[i], { outcome: 'error', reason: typed.reason })
  }
  await probeRest(tx, p, items, rest.filter((i) => items[i].outcome === undefined), mixed)
  const { errors, lines } = await store(tx, p, items)

  const batch = emptyTally()
  const byCounty = structuredClone(p.byCounty)
  for (const item of items) {
    const outcome = item.outcome!
    batch[outcome]++
    ;(byCounty[String(item.county ?? 'unknown')] ??= emptyTally())[outcome]++
  }
  // One statement for the kept rows' queue entries and keys and the file's counters. Link's inbox:
  // the batch's lines are this file's only rows in that range (a record is stored once); their keys'
  // lock rows are link's to create (src/link/batch.ts, lockRows). A key per new row (not for a row
  // kept for the columns it adds: its key is the seen row's).
  await tx.query(
    `WITH kept AS (SELECT id, checksum, seen_before FROM lab_rows WHERE file_id = $1 AND line BETWEEN $8 AND $9),
          queued AS (INSERT INTO link_queue (lab_row_id) SELECT id FROM kept),
          keyed AS (INSERT INTO lab_row_keys (checksum, last_file_id) SELECT checksum, $1 FROM kept WHERE NOT seen_before)
     UPDATE files SET total_rows = total_rows + $2, new_rows = new_rows + $3, seen_rows = seen_rows + $4,
            duplicate_rows = duplicate_rows + $5, error_rows = error_rows + $6, by_county = $7 WHERE id = $1`,
    [p.fileId, items.length, batch.new, batch.seen, batch.duplicate, batch.error, JSON.stringify(byCounty), ...lines],
  )
  // The caller drops this progress if the transaction does not commit, and starts again from the database.
  p.accounted += items.length
  p.byCounty = byCounty
  for (const o of OUTCOMES) p.totals[o] += batch[o]
  return { errors: errors.map((it) => ({ line: it.record.line, reason: it.reason! })) }
}

