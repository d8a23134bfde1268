/**
 * The link engine: lab rows → people, index cases (per person, county and infection) and lab
 * results, with an event per decision (link_events) and every value not applied (link_changes).
 * It marks changed cases for case sync and new positive results for exposure notification.
 *
 * Inbox: link_queue (filled by ingest), claimed through the work queue (queue.ts: linkQueue) inside
 * each batch's transaction. Each batch is one transaction (batch.ts); the rules are in decide.ts;
 * the CommCare properties in data.ts. A batch that fails is retried row by row, so a row that
 * cannot be linked holds back no other: it is retried with the spec's backoff, and after its last
 * attempt left in the queue, failed, with its error and a `failed` link event (`herald link --failed`,
 * `herald link --retry`).
 */
import type { Db } from '../db/types.ts'
import type { Engine } from '../engine/engine.ts'
import { claimInTx, fail } from '../engine/queue.ts'
import type { Config } from '../config.ts'
import { errorText, type Logger } from '../log.ts'
import { linkBatch, prepareLocks, type BatchResult } from './batch.ts'
import { NoCountyList } from './counties.ts'
import { linkQueue } from './queue.ts'

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

/** One batch; if it fails, its rows one by one. `signal`: stop between those rows. */
export async function linkOnce(db: Db, limit: number, log: Logger, signal?: AbortSignal): Promise<Record<string, number>> {
  for (let attempt = 1; ; attempt++) {
    try {
      await prepareLocks(db, limit)
      return tally(await db.transaction((tx) => linkBatch(tx, limit)))
    } catch (err) {
      if (err instanceof NoCountyList) throw err
      if (retryable(err) && attempt < 3) continue
      log.warn({ err: errorText(err) }, 'link batch failed; linking its rows one by one')
      return linkOneByOne(db, limit, log, signal)
    }
  }
}

/** The rows of a failed batch, each in its own transaction: a row that fails alone is recorded as failing. */
async function linkOneByOne(db: Db, limit: number, log: Logger, signal?: AbortSignal): Promise<Record<string, number>> {
  // The rows such a batch takes (due, not held by another batch); locked only while they are listed.
  const ids = (await db.transaction((tx) => claimInTx(tx, linkQueue, limit))).map((r) => r.id)
  const counts: Record<string, number> = {}
  for (const id of ids) {
    if (signal?.aborted) break // nothing is held between rows: the rest stay due
    try {
      addCounts(counts, tally(await db.transaction((tx) => linkBatch(tx, 1, [Number(id)]))))
    } catch (err) {
      if (err instanceof NoCountyList) throw err
      const error = errorText(err)
      const failed = await db.transaction(async (tx) => {
        // Recorded only on a row still due and now locked by this transaction: another batch may
        // have linked it meanwhile. Backoff, or failed for good, by the spec (queue.ts).
        if ((await claimInTx(tx, linkQueue, 1, { where: 'lab_row_id = $1', params: [id] })).length === 0) return undefined
        const [r] = await fail(tx, linkQueue, null, [{ id, error }])
        if (r?.failed) {
          // Numbered -1, -2, … : the batch that links the row after a retry numbers its decisions
          // 1, 2, … without reading the row's earlier events.
          await tx.query(`INSERT INTO link_events (lab_row_id, seq, kind, detail)
            SELECT $1, least(coalesce(min(seq), 0), 0) - 1, 'failed', $2 FROM link_events WHERE lab_row_id = $1`, [id, { error, attempts: r.attempts }])
        }
        return r
      })
      if (!failed) continue
      log.error({ labRow: id, attempts: failed.attempts, next: failed.failed ? 'failed' : 'retry', err: error }, 'lab row could not be linked')
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

export function linkEngine(config: Config, log: Logger): Engine {
  let warnedAt = 0
  return {
    name: 'link',
    batchSize: config.linkBatchRows,
    async step(db, signal) {
      try {
        const started = Date.now()
        const counts = await linkOnce(db, config.linkBatchRows, log, signal)
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
