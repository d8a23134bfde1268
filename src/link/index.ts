/**
 * The link engine: lab rows → people, index cases (per person, county and infection) and lab
 * results, with an event per decision (link_events) and every value not applied (link_changes).
 * It marks changed cases for case sync and new positive results for exposure notification.
 *
 * Inbox: link_queue (filled by ingest). Each batch is one transaction (batch.ts); the rules are in
 * decide.ts; the CommCare properties in data.ts. A batch that fails is retried row by row, so a
 * row that cannot be linked holds back no other: it is retried with backoff, and after
 * MAX_ATTEMPTS left in the queue with its error and a `failed` event (`herald link --failed`).
 */
import type { Db } from '../db/types.ts'
import type { BatchEngine } from '../engine/engine.ts'
import type { Config } from '../config.ts'
import { errorText, type Logger } from '../log.ts'
import { linkBatch, MAX_ATTEMPTS, type BatchResult } from './batch.ts'
import { NoCountyList } from './counties.ts'

// Deadlock and serialisation failures: the batch is simply run again.
const RETRY_SQLSTATES = new Set(['40P01', '40001'])
const retryable = (err: unknown) => RETRY_SQLSTATES.has((err as { code?: string })?.code ?? '')

function addCounts(into: Record<string, number>, from: Record<string, number>) {
  for (const [k, n] of Object.entries(from)) into[k] = (into[k] ?? 0) + n
  return into
}

function tally(result: BatchResult): Record<string, number> {
  const counts: Record<string, number> = {}
  for (const o of result.outcomes.values()) counts[o] = (counts[o] ?? 0) + 1
  if (result.deferred > 0) counts.deferred = result.deferred
  return counts
}

export async function linkOnce(db: Db, limit: number, log: Logger): Promise<Record<string, number>> {
  for (let attempt = 1; ; attempt++) {
    try {
      return tally(await db.transaction((tx) => linkBatch(tx, limit)))
    } catch (err) {
      if (err instanceof NoCountyList) throw err
      if (retryable(err) && attempt < 3) continue
      log.warn({ err: errorText(err) }, 'link batch failed; linking its rows one by one')
      return linkOneByOne(db, limit, log)
    }
  }
}

/** The rows of a failed batch, each in its own transaction: a row that fails alone is recorded as failing. */
async function linkOneByOne(db: Db, limit: number, log: Logger): Promise<Record<string, number>> {
  const ids = await db.query<{ lab_row_id: number }>(
    `SELECT lab_row_id FROM link_queue WHERE attempts < $2 AND (retry_at IS NULL OR retry_at <= now())
     ORDER BY lab_row_id LIMIT $1`, [limit, MAX_ATTEMPTS])
  const counts: Record<string, number> = {}
  for (const { lab_row_id: id } of ids) {
    try {
      addCounts(counts, tally(await db.transaction((tx) => linkBatch(tx, 1, [id]))))
    } catch (err) {
      const error = errorText(err)
      const [row] = await db.query<{ attempts: number }>(
        `UPDATE link_queue SET attempts = attempts + 1, error = $2,
           retry_at = now() + make_interval(secs => 30 * power(4, attempts))
         WHERE lab_row_id = $1 RETURNING attempts`, [id, error])
      if (row && row.attempts >= MAX_ATTEMPTS) {
        await db.query(`INSERT INTO link_events (lab_row_id, seq, kind, detail)
          SELECT $1, coalesce(max(seq), 0) + 1, 'failed', $2 FROM link_events WHERE lab_row_id = $1`, [id, { error, attempts: row.attempts }])
      }
      log.error({ labRow: id, attempts: row?.attempts, err: error }, 'lab row could not be linked')
      counts.failed = (counts.failed ?? 0) + 1
    }
  }
  return counts
}

/** Links batch after batch until nothing is waiting (scripts, tests, benchmarks); returns the outcome counts. */
export async function linkUntilEmpty(db: Db, limit: number, log: Logger): Promise<Record<string, number>> {
  const total: Record<string, number> = {}
  for (;;) {
    const counts = await linkOnce(db, limit, log)
    if (Object.keys(counts).length === 0) return total
    addCounts(total, counts)
  }
}

export function linkEngine(config: Config, log: Logger): BatchEngine {
  let warnedAt = 0
  return {
    name: 'link',
    batchSize: config.linkBatchRows,
    async step(db) {
      try {
        const started = Date.now()
        const counts = await linkOnce(db, config.linkBatchRows, log)
        if (Object.keys(counts).length > 0) log.info({ ...counts, ms: Date.now() - started }, 'link batch')
        return counts
      } catch (err) {
        if (!(err instanceof NoCountyList)) throw err
        if (Date.now() - warnedAt > 600_000) {
          log.warn('link is waiting for the county list: run `herald counties load FILE` (CommCare county_list JSON)')
          warnedAt = Date.now()
        }
        return {}
      }
    },
  }
}
