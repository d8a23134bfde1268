/**
 * The nightly run: facts for the last days (statuses settle for 3), then retention. It is a
 * schedule, a queue row with a time (schedules, name 'nightly', nightlyQueue): every Herald process
 * hosts the engine, and the one that claims the row when it is due runs the night, so it runs once
 * however many processes there are. Its lease is renewed as facts and retention go; a run whose
 * process died is taken over when the lease runs out. Done, the row is due again at the next
 * HERALD_NIGHTLY_AT in HERALD_TIMEZONE, computed in SQL from local dates, so a clock change moves
 * the instant and not the hour. nightly_runs keeps each night's summary. Facts come first so the
 * days they recompute still hold every notification. Before both, on tables partitioned by day
 * (herald db partition-by-day), the days ahead get their partitions.
 */
import { randomUUID } from 'node:crypto'
import type { Db, Queryable } from '../../db/types.ts'
import type { Engine } from '../../engine/engine.ts'
import { claim, fail, finish, heartbeat, release } from '../../engine/queue.ts'
import { ensureDayPartitions } from '../../db/optional/partition-by-day.ts'
import { errorText, type Logger } from '../../log.ts'
import type { ObjectStore } from '../../storage/types.ts'
import { computeFacts } from '../facts/facts.ts'
import { nightlyQueue } from './queue.ts'
import { runRetention } from './retention.ts'

const SCHEDULE = 'nightly'
const CHECK_EVERY_MS = 60_000
/** How often a running night renews its lease (600 s): at most this often, at a service-day or batch boundary. */
const BEAT_EVERY_MS = 30_000

// $1 time zone, $2 HH:MM, $3 the moment (NULL: now). Today is the local date; a date plus a time is a
// local timestamp, AT TIME ZONE makes it the instant it is there that day (23- and 25-hour days included).
const NOW = `coalesce($3::timestamptz, now())`
const TODAY_AT = `((((${NOW}) AT TIME ZONE $1)::date + $2::time) AT TIME ZONE $1)`
/** The first HERALD_NIGHTLY_AT after the moment: today's if still ahead, else tomorrow's. */
const NEXT_AT = `CASE WHEN ${TODAY_AT} > ${NOW} THEN ${TODAY_AT} ELSE ((((${NOW}) AT TIME ZONE $1)::date + 1 + $2::time) AT TIME ZONE $1) END`
/** The night a run at the moment is for: the local date of the last HERALD_NIGHTLY_AT at or before it. */
const NIGHT = `CASE WHEN ${TODAY_AT} <= ${NOW} THEN ((${NOW}) AT TIME ZONE $1)::date ELSE ((${NOW}) AT TIME ZONE $1)::date - 1 END`

/** When the nightly run is next due after `asOf` (default now). */
export async function nextNight(db: Queryable, timezone: string, at: string, asOf?: Date): Promise<Date> {
  const [r] = await db.query(`SELECT ${NEXT_AT} AS next`, [timezone, at, asOf ?? null])
  return new Date(r.next)
}

export interface NightlyOptions {
  store: ObjectStore
  /** HERALD_NIGHTLY_AT (HH:MM) in `timezone` (HERALD_TIMEZONE). */
  at: string
  timezone: string
  log: Logger
  /** This process's worker id (HERALD_WORKER_ID); default one of its own per engine. */
  workerId?: string
  /** How often an idle engine looks at the schedule (default a minute). */
  checkEveryMs?: number
  /** Retention's batch (tests). */
  batch?: number
  /** Day partitions kept ahead of today, once the tables are partitioned (herald db partition-by-day); default 7. */
  partitionDaysAhead?: number
}

export function nightlyEngine(opts: NightlyOptions): Engine {
  const worker = opts.workerId ?? `nightly:${randomUUID()}`
  const params = [opts.timezone, opts.at, null]
  let checked = -Infinity
  return {
    name: 'nightly',
    batchSize: 1,
    async step(db: Db, signal: AbortSignal): Promise<Record<string, number>> {
      if (signal.aborted || Date.now() - checked < (opts.checkEveryMs ?? CHECK_EVERY_MS)) return {}
      checked = Date.now()
      // The schedule's row, if it has none yet: due at the next night's time, or at once when today's
      // time has passed and tonight has not run (a process started after 03:00 runs tonight's).
      await db.query(
        `INSERT INTO schedules (name, retry_at)
         SELECT $4::text, CASE WHEN ${TODAY_AT} <= ${NOW} AND NOT EXISTS (SELECT 1 FROM nightly_runs
                  WHERE task = 'messaging' AND night = ((${NOW}) AT TIME ZONE $1)::date AND finished_at IS NOT NULL) THEN ${TODAY_AT} ELSE ${NEXT_AT} END
         ON CONFLICT (name) DO NOTHING`, [...params, SCHEDULE])
      const [row] = await claim(db, nightlyQueue, worker, 1)
      if (!row) return {}
      return run(db, signal)
    },
  }

  async function run(db: Db, signal: AbortSignal): Promise<Record<string, number>> {
    const { log } = opts
    /**
     * Partitioned tables (docs/operations.md): tomorrow's rows need their day's partition before they
     * arrive, or they land in the DEFAULT one. Days ahead, so a night that fails here (a lock not had
     * within its timeout) is made good by the next; it never stops facts and retention.
     */
    const dayPartitions = async () => {
      try {
        const r = await ensureDayPartitions(db, { timezone: opts.timezone, daysAhead: opts.partitionDaysAhead })
        if (r.created.length || r.boundsDropped.length) log.info({ created: r.created, boundsDropped: r.boundsDropped }, 'nightly run: day partitions')
        return r.created.length
      } catch (err) {
        log.error({ err: errorText(err) }, 'nightly run: day partitions not created; tried again next night')
        return 0
      }
    }
    const [{ night }] = await db.query(`SELECT (${NIGHT})::text AS night`, params)
    // A night resumed (stopped, or taken over from a process that died) starts again: facts replace whole days, retention moves what is left.
    await db.query(`INSERT INTO nightly_runs (task, night) VALUES ('messaging', $1)
      ON CONFLICT (task, night) DO UPDATE SET started_at = now(), finished_at = NULL`, [night])
    log.info({ night }, 'nightly run: facts, then retention')
    // Stops at the next service-day or batch: on the stop signal, or when the schedule is no longer ours.
    const stop = new AbortController()
    const onStop = () => stop.abort()
    signal.addEventListener('abort', onStop)
    if (signal.aborted) stop.abort() // before the listener: it would never hear it
    let lost = false
    let beat = Date.now()
    const renew = async () => {
      if (Date.now() - beat < BEAT_EVERY_MS) return
      beat = Date.now()
      if (!(await heartbeat(db, nightlyQueue, worker, [SCHEDULE])).has(SCHEDULE)) {
        lost = true
        stop.abort()
      }
    }
    const partitions = await dayPartitions()
    let facts, retention
    try {
      facts = await computeFacts(db, {}, renew, stop.signal)
      retention = stop.signal.aborted ? [] : await runRetention(db, { store: opts.store, log, batch: opts.batch, onBatch: renew, signal: stop.signal })
    } catch (err) {
      const [f] = await fail(db, nightlyQueue, worker, [{ id: SCHEDULE, error: errorText(err) }])
      log.error({ night, err: errorText(err), attempts: f?.attempts, failed: f?.failed }, 'nightly run failed')
      return { [f?.failed ? 'failed' : 'retrying']: 1 }
    } finally {
      signal.removeEventListener('abort', onStop)
    }
    if (stop.signal.aborted) {
      // Due again at once (a no-op if another process holds it now): another process, or the next start, runs the night.
      await release(db, nightlyQueue, worker, [SCHEDULE])
      log.info({ night }, lost ? 'nightly run: taken over by another process' : 'nightly run stopped; it runs again from the start')
      return { [lost ? 'lost' : 'stopped']: 1 }
    }
    const summary = {
      ...(partitions ? { partitions } : {}),
      facts,
      archived: retention.reduce((n, s) => n + s.archived, 0),
      deleted: retention.reduce((n, s) => n + s.deleted, 0),
      files: retention.reduce((n, s) => n + s.files, 0),
    }
    const done = await db.transaction(async (tx) => {
      // The next night's time goes in with the finish itself, so no process ever sees the row due between.
      const next = await nextNight(tx, opts.timezone, opts.at)
      const ours = await finish(tx, nightlyQueue, worker, [{ id: SCHEDULE, next: next.toISOString() }],
        { columns: 'next timestamptz', set: 'last_run_at = now(), retry_at = v.next' })
      if (!ours.has(SCHEDULE)) return false
      await tx.query(`UPDATE nightly_runs SET finished_at = now(), summary = $2 WHERE task = 'messaging' AND night = $1`, [night, JSON.stringify(summary)])
      return true
    })
    if (!done) {
      log.warn({ night }, 'nightly run done, but another process took the schedule over meanwhile: its run records the night')
      return { lost: 1 }
    }
    log.info({ night, ...summary }, 'nightly run done')
    return { nights: 1 }
  }
}
