/**
 * Partitioning notifications and notification_history by day: opt-in, never a numbered migration.
 * An agency runs it once (`herald db partition-by-day`) when the tables pass ~50 million rows or
 * 100 GB; from then on a past day is a table of its own, so old history goes by DROP instead of a
 * DELETE and the vacuum after it (docs/operations.md). Retention keeps moving rows as before.
 *
 * The swap holds an exclusive lock on both tables for catalog changes only (~0.3 s), never a scan:
 *   1. prepare, online: a CHECK (created_at < bound) added NOT VALID and then VALIDATEd (a scan that
 *      lets reads and writes go on), and the unique indexes a partitioned table needs (with created_at)
 *      built CONCURRENTLY beside the old ones;
 *   2. swap, one transaction: each table renamed to <table>_before_<day>, its primary key moved onto
 *      the prepared index, a partitioned parent created under the old name with the same columns,
 *      constraints and index names, the old table ATTACHed for everything before the bound (the
 *      validated CHECK spares the scan, identical indexes are adopted rather than built), a DEFAULT
 *      partition created, and the views over the tables re-pointed;
 *   3. after it, online: the day partitions from the bound on (ensureDayPartitions, as the nightly run).
 * The bound is local midnight two days ahead (HERALD_TIMEZONE), so a slow prepare cannot outrun it.
 * Whether it was applied is read from the catalog (the table is partitioned), never a flag that could disagree.
 */
import type { Db, Queryable } from '../types.ts'

export const TABLES = ['notifications', 'notification_history'] as const
/** Unique indexes that must carry created_at on a partitioned table: their columns then. */
const UNIQUE_BY_DAY: Record<string, string> = {
  notifications_provider_ref: '(provider, provider_ref, created_at) WHERE provider_ref IS NOT NULL',
}
export const DEFAULT_DAYS_AHEAD = 7
const LOCK_TIMEOUT_MS = 10_000

export interface PartitionOptions {
  /** HERALD_TIMEZONE: a day partition runs from local midnight to local midnight. */
  timezone: string
  /** Daily partitions created ahead of the bound (the nightly run keeps this many ahead of today). */
  daysAhead?: number
  /** How long the swap waits for the tables' lock before it gives up (default 10 s): it never queues long in front of the senders. */
  lockTimeoutMs?: number
  /** Progress lines (no personal data). */
  progress?: (line: string) => void
}

export interface PartitionResult {
  applied: boolean
  /** Everything before it stays in <table>_before_<day>. */
  bound: Date
  partitions: string[]
}

export class PartitionRefused extends Error {
  override name = 'PartitionRefused'
}

const bound = (t: string) => `${t}_partition_bound`
const lit = (d: Date) => `'${d.toISOString()}'`

/** Which of the two tables are partitioned already. */
export async function partitioned(db: Queryable): Promise<Set<string>> {
  const rows = await db.query(`SELECT relname FROM pg_class WHERE oid IN (to_regclass('notifications'), to_regclass('notification_history')) AND relkind = 'p'`)
  return new Set(rows.map((r) => r.relname))
}

export async function partitionByDay(db: Db, opts: PartitionOptions): Promise<PartitionResult> {
  const say = opts.progress ?? (() => {})
  const done = await partitioned(db)
  if (done.size && done.size < TABLES.length) throw new PartitionRefused(`only ${[...done].join(', ')} is partitioned: the two are partitioned together; see docs/operations.md`)
  let result: PartitionResult
  if (done.size) {
    result = { applied: false, bound: await oldPartitionsEnd(db), partitions: [] }
  } else {
    const at = await prepare(db, opts, say)
    say('swapping the tables for partitioned ones (one transaction)')
    result = await db.transaction((tx) => swap(tx, at, opts))
  }
  // The days after the bound, online; again on a second run (nothing else to do then). At least through the
  // day after the bound whatever --days-ahead says, so the nightly run has a day's margin from the start.
  say('creating the day partitions ahead')
  const days = await ensureDayPartitions(db, { ...opts, daysAhead: Math.max(3, opts.daysAhead ?? DEFAULT_DAYS_AHEAD) })
  result.partitions.push(...days.created)
  // Autovacuum never analyzes a partitioned parent: its statistics (across the partitions) are taken here, online.
  if (result.applied) {
    say('analyzing the partitioned tables')
    for (const t of TABLES) await db.exec(`ANALYZE ${t}`)
  }
  return result
}

/** Step 1, online: the bound's CHECK validated, and the unique indexes with created_at built. Rerun safely. */
export async function prepare(db: Db, opts: PartitionOptions, say: (l: string) => void = () => {}): Promise<Date> {
  const timezone = opts.timezone
  // Local midnight two days ahead: at least 24 hours for the scans and index builds below.
  const [{ at }] = await db.query(`SELECT ((((now() AT TIME ZONE $1)::date + 2)::timestamp) AT TIME ZONE $1) AS at`, [timezone])
  let when = new Date(at)
  // A bound left by an interrupted run is kept if still 12 hours ahead (its validation is done), else replaced.
  const left = await boundsLeft(db)
  const kept = left.length === TABLES.length && left.every((b) => b.at.getTime() === left[0].at.getTime()) && left[0].at.getTime() > Date.now() + 12 * 3600_000
  if (kept) when = left[0].at
  const concurrently = db.kind === 'postgres' ? 'CONCURRENTLY' : '' // PGlite has one connection: nobody to keep working
  for (const t of TABLES) {
    if (!kept) {
      await db.transaction(async (tx) => {
        // Adding a CHECK takes the table's exclusive lock, for no scan (NOT VALID): wait for it briefly, never long.
        await tx.exec(`SET LOCAL lock_timeout = '${opts.lockTimeoutMs ?? LOCK_TIMEOUT_MS}ms'`)
        await tx.exec(`ALTER TABLE ${t} DROP CONSTRAINT IF EXISTS ${bound(t)}`)
        await tx.exec(`ALTER TABLE ${t} ADD CONSTRAINT ${bound(t)} CHECK (created_at < ${lit(when)}) NOT VALID`)
      })
    }
    say(`${t}: validating created_at < ${when.toISOString()} (a scan; reads and writes go on)`)
    await db.exec(`ALTER TABLE ${t} VALIDATE CONSTRAINT ${bound(t)}`)
    for (const ix of await uniqueIndexes(db, t)) {
      if (ix.withDay) continue
      const name = `${ix.name}_by_day`
      // A concurrent build that failed leaves an invalid index behind: built again.
      const [old] = await db.query(`SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass($1)`, [name])
      if (old && !old.indisvalid) await db.exec(`DROP INDEX ${concurrently} ${name}`)
      if (old?.indisvalid) continue
      say(`${t}: building index ${name} ${ix.byDay}`)
      await db.exec(`CREATE UNIQUE INDEX ${concurrently} ${name} ON ${t} ${ix.byDay}`)
    }
  }
  return when
}

/** The bound CHECKs an interrupted run left on unpartitioned tables, and their instants. */
export async function boundsLeft(db: Queryable): Promise<{ table: string; at: Date }[]> {
  const rows = await db.query(
    `SELECT c.conrelid::regclass::text AS t, (regexp_match(pg_get_constraintdef(c.oid), '''([^'']+)''::timestamp'))[1]::timestamptz AS at
     FROM pg_constraint c JOIN pg_class r ON r.oid = c.conrelid
     WHERE r.relkind = 'r' AND c.conname = r.relname || '_partition_bound' AND r.relname = ANY($1)`, [TABLES])
  return rows.map((r) => ({ table: r.t, at: new Date(r.at) }))
}

interface UniqueIndex { name: string; primary: boolean; constraint: string | null; withDay: boolean; byDay: string }

/** A table's unique indexes, and the columns each needs on the partitioned table. */
async function uniqueIndexes(db: Queryable, t: string): Promise<UniqueIndex[]> {
  const rows = await db.query(
    `SELECT i.indexrelid::regclass::text AS name, i.indisprimary AS primary, c.conname AS constraint,
            array_agg(a.attname::text ORDER BY k.n) AS cols
     FROM pg_index i CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, n)
     JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
     LEFT JOIN pg_constraint c ON c.conindid = i.indexrelid AND c.conrelid = i.indrelid
     WHERE i.indrelid = $1::regclass AND i.indisunique AND i.indexrelid::regclass::text NOT LIKE '%\\_by\\_day'
     GROUP BY 1, 2, 3`, [t])
  return rows.map((r) => {
    const withDay = r.cols.includes('created_at')
    const byDay = r.primary ? `(${[...r.cols, 'created_at'].join(', ')})` : UNIQUE_BY_DAY[r.name]
    if (!withDay && !byDay) throw new PartitionRefused(`${t}: unique index ${r.name} has no created_at, and this Herald does not know its by-day form`)
    return { name: r.name, primary: r.primary, constraint: r.constraint, withDay, byDay }
  })
}

/** Step 2, one transaction: the exclusive locks are held for catalog changes only. */
export async function swap(tx: Queryable, at: Date, opts: PartitionOptions): Promise<PartitionResult> {
  await tx.exec(`SET LOCAL lock_timeout = '${opts.lockTimeoutMs ?? LOCK_TIMEOUT_MS}ms'`)
  // Both tables at once, in the order retention locks them: a run in between (retention, a report) finishes first.
  await tx.exec(`LOCK TABLE ${TABLES.join(', ')} IN ACCESS EXCLUSIVE MODE`)
  if ((await partitioned(tx)).size) return { applied: false, bound: at, partitions: [] } // another run got here first
  const [{ passed, day }] = await tx.query(`SELECT now() >= $1::timestamptz AS passed, to_char($1::timestamptz AT TIME ZONE $2, 'YYYYMMDD') AS day`, [at, opts.timezone])
  if (passed) throw new PartitionRefused(`the bound ${at.toISOString()} has passed while preparing: run the command again`)
  // Without a validated bound ATTACH would scan each table under this lock: never.
  const [{ valid }] = await tx.query(`SELECT count(*) FILTER (WHERE convalidated)::int AS valid FROM pg_constraint
    WHERE (conrelid, conname) IN (('notifications'::regclass, $1), ('notification_history'::regclass, $2))`, TABLES.map(bound))
  if (valid !== TABLES.length) throw new PartitionRefused('the tables have no validated bound: prepare them first')
  // Views name the tables by identity: their text is read before the renames and replayed after.
  const views = await tx.query(
    `SELECT DISTINCT v.oid::regclass::text AS name, pg_get_viewdef(v.oid) AS def
     FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid JOIN pg_class v ON v.oid = r.ev_class
     WHERE d.classid = 'pg_rewrite'::regclass AND d.refobjid = ANY($1::regclass[]) AND v.relkind = 'v'`, [TABLES])
  const partitions: string[] = []
  for (const t of TABLES) {
    const old = `${t}_before_${day}`
    const unique = await uniqueIndexes(tx, t)
    const swapped = new Set(unique.filter((u) => !u.withDay).map((u) => u.name))
    // Every other index is kept as it is, renamed, and defined again on the parent.
    const indexes = (await tx.query(`SELECT indexrelid::regclass::text AS name, pg_get_indexdef(indexrelid) AS def
      FROM pg_index WHERE indrelid = $1::regclass`, [t])).filter((ix) => !swapped.has(ix.name.replace(/_by_day$/, '')))
    // The old table's keys move onto the prepared indexes (built with created_at; no scan), under names of its own.
    for (const ix of unique.filter((u) => !u.withDay)) {
      if (ix.constraint) await tx.exec(`ALTER TABLE ${t} DROP CONSTRAINT ${ix.constraint}`)
      else await tx.exec(`DROP INDEX ${ix.name}`)
      if (ix.primary) await tx.exec(`ALTER TABLE ${t} ADD CONSTRAINT ${old}_pkey PRIMARY KEY USING INDEX ${ix.name}_by_day`)
      else await tx.exec(`ALTER INDEX ${ix.name}_by_day RENAME TO ${ix.name}_${day}`)
    }
    for (const ix of indexes) await tx.exec(`ALTER INDEX ${ix.name} RENAME TO ${ix.name}_${day}`)
    await tx.exec(`ALTER TABLE ${t} RENAME TO ${old}`)
    await tx.exec(`CREATE TABLE ${t} (LIKE ${old} INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING STORAGE INCLUDING COMMENTS) PARTITION BY RANGE (created_at)`)
    await tx.exec(`ALTER TABLE ${t} DROP CONSTRAINT ${bound(t)}`)
    // The parent's indexes under the old names (later migrations name them); ATTACH adopts the old table's equal ones.
    for (const ix of unique.filter((u) => !u.withDay)) {
      if (ix.primary) await tx.exec(`ALTER TABLE ${t} ADD CONSTRAINT ${t}_pkey PRIMARY KEY ${ix.byDay}`)
      else await tx.exec(`CREATE UNIQUE INDEX ${ix.name} ON ${t} ${ix.byDay}`)
    }
    for (const ix of indexes) await tx.exec(ix.def)
    // No scan: the validated CHECK proves every row is before the bound.
    await tx.exec(`ALTER TABLE ${t} ATTACH PARTITION ${old} FOR VALUES FROM (MINVALUE) TO (${lit(at)})`)
    await tx.exec(`ALTER TABLE ${old} DROP CONSTRAINT ${bound(t)}`)
    partitions.push(old)
    // Anything no day partition takes (the nightly run fell behind) lands here rather than failing; see ensureDayPartitions.
    // The days themselves are made after this transaction, without its lock: until the bound, rows go to the old table.
    await tx.exec(`CREATE TABLE ${t}_default PARTITION OF ${t} DEFAULT`)
    await tx.exec(`COMMENT ON TABLE ${t} IS 'Partitioned by day (herald db partition-by-day, ${new Date().toISOString()}); ${old} holds every row before ${at.toISOString()}.'`)
  }
  for (const v of views) await tx.exec(`CREATE OR REPLACE VIEW ${v.name} AS ${v.def}`)
  return { applied: true, bound: at, partitions }
}

interface Day { name: string; from: Date; to: Date }

/** The day partitions missing from the newest one's end through local `daysAhead` days after today. */
async function missingDays(q: Queryable, t: string, timezone: string, daysAhead: number): Promise<Day[]> {
  const rows = await q.query(
    `WITH latest AS (
       SELECT max((regexp_match(pg_get_expr(c.relpartbound, c.oid), 'TO \\(''([^'']+)''\\)'))[1]::timestamptz) AS upper
       FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = $1::regclass)
     SELECT to_char(d, 'YYYYMMDD') AS day, greatest(upper, d::timestamp AT TIME ZONE $2) AS "from", (d + 1)::timestamp AT TIME ZONE $2 AS "to"
     FROM latest, LATERAL (SELECT g::date AS d FROM generate_series((upper AT TIME ZONE $2)::date, (now() AT TIME ZONE $2)::date + $3::int, interval '1 day') g) x
     WHERE (d + 1)::timestamp AT TIME ZONE $2 > upper
     ORDER BY d`, [t, timezone, daysAhead])
  return rows.map((r) => ({ name: `${t}_p${r.day}`, from: new Date(r.from), to: new Date(r.to) }))
}

const range = (d: Day) => `FOR VALUES FROM (${lit(d.from)}) TO (${lit(d.to)})`

/**
 * One day: built as a table of its own and ATTACHed, which locks the parent only in SHARE
 * UPDATE EXCLUSIVE mode (reads and writes go on). ATTACH scans the DEFAULT partition under an exclusive
 * lock to prove none of its rows belong to the new day: rows it caught for that day move first.
 */
async function attachDay(q: Queryable, t: string, d: Day) {
  const [{ cols }] = await q.query(`SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum) AS cols FROM pg_attribute
    WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped`, [t])
  await q.exec(`CREATE TABLE ${d.name} (LIKE ${t} INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING STORAGE)`)
  await q.query(`WITH caught AS (DELETE FROM ${t}_default WHERE created_at >= $1 AND created_at < $2 RETURNING ${cols})
    INSERT INTO ${d.name} (${cols}) SELECT ${cols} FROM caught`, [d.from, d.to])
  await q.exec(`ALTER TABLE ${t} ATTACH PARTITION ${d.name} ${range(d)}`)
}

/**
 * The nightly run's step: day partitions kept `daysAhead` days ahead of today when the tables are
 * partitioned; otherwise one catalog read. Each day is its own short transaction that waits for its
 * locks at most lockTimeoutMs (a long report in the way: it fails, and the next night tries again,
 * days ahead). It also drops a bound CHECK an interrupted `herald db partition-by-day` left that is
 * about to pass: past it, every new notification would be refused.
 */
export async function ensureDayPartitions(db: Db, opts: { timezone: string; daysAhead?: number; lockTimeoutMs?: number }): Promise<{ created: string[]; boundsDropped: string[] }> {
  const wait = `SET LOCAL lock_timeout = '${opts.lockTimeoutMs ?? LOCK_TIMEOUT_MS}ms'`
  const created: string[] = []
  for (const t of await partitioned(db)) {
    for (const d of await missingDays(db, t, opts.timezone, opts.daysAhead ?? DEFAULT_DAYS_AHEAD)) {
      await db.transaction(async (tx) => {
        await tx.exec(wait)
        await attachDay(tx, t, d)
      })
      created.push(d.name)
    }
  }
  const boundsDropped: string[] = []
  for (const b of await boundsLeft(db)) {
    if (b.at.getTime() > Date.now() + 6 * 3600_000) continue
    await db.transaction(async (tx) => {
      await tx.exec(wait)
      await tx.exec(`ALTER TABLE ${b.table} DROP CONSTRAINT IF EXISTS ${bound(b.table)}`)
    })
    boundsDropped.push(b.table)
  }
  return { created, boundsDropped }
}

/** Where the old table's partition ends (an already partitioned database's bound). */
async function oldPartitionsEnd(db: Queryable): Promise<Date> {
  const [r] = await db.query(
    `SELECT min((regexp_match(pg_get_expr(c.relpartbound, c.oid), 'TO \\(''([^'']+)''\\)'))[1]::timestamptz) AS at
     FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'notifications'::regclass`)
  return new Date(r.at)
}
