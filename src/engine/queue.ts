/**
 * The one work queue every engine claims, retries and fails through. An engine keeps its work in
 * its own table (the "why" trail stays there); beside its own state, that table has the six queue
 * columns of migration 009 (claimed_by, claimed_until, attempts, retry_at, last_error, failed_at),
 * and a QueueSpec beside the engine says which rows are its work and how it retries. Everything
 * else is here, once:
 *
 *   claim      due rows, FOR UPDATE SKIP LOCKED, each with a lease (claimed_by, claimed_until); with
 *              `hold`, moved to their in-flight state by the same statement (the gate and the claim in one)
 *   claimInTx  due rows locked by the caller's transaction: the transaction is the lease (link, receipts)
 *   hold       the effect gate: moves rows to their in-flight state only while this worker's lease is live
 *   heartbeat  extends this worker's leases; says which rows are still its own
 *   finish     records an outcome only on rows this worker still holds (RETURNING says which)
 *   fail       backoff computed in SQL, or a visible terminal failure, with an event in the same statement
 *   release    gives back rows not started (on stop)
 *   retry      `herald queue retry`: failed rows are due again, attempts anew, with an event
 *   stats      waiting, in flight, retrying, failed, oldest waiting age (`herald queue`, /metrics)
 *
 * Attempts count failures. A lease that ran out is one too: a claim that takes a row another
 * worker still names (claimed_by) counts an attempt, so a row whose workers die every time (killed,
 * out of memory) fails after max attempts instead of taking down every worker in turn.
 */
import type { Queryable } from '../db/types.ts'

export interface RetryPolicy {
  /** Attempts (failures or lost leases) before the row fails for good. */
  maxAttempts: number
  /** Seconds before the 2nd attempt; each wait after is `factor` times the last, at most `capSeconds`. */
  baseSeconds: number
  factor: number
  capSeconds: number
  /** Each wait is spread by ±jitter (0.1: ±10%), so rows failed together do not return together. */
  jitter: number
}

export interface QueueSpec {
  /** The engine's name, as in `herald run --engines`, `herald queue` and /metrics. */
  engine: string
  table: string
  /** Primary key column and its type. */
  key: string
  keyType: 'bigint' | 'uuid' | 'text'
  /** SQL over the table's own columns (no alias): which rows are this engine's work, besides the queue columns. */
  ready: string
  /** ORDER BY of a claim: which due rows go first. */
  order: string
  /** When a row became work, for the oldest waiting age (a column, or an expression over them). */
  since?: string
  leaseSeconds: number
  retry: RetryPolicy
  /**
   * The engine's own terminal state, set with failed_at: column → SQL value (e.g. status →
   * 'technical-failure'). The value may read the row (`t`) and the failure (`f`: error, permanent,
   * detail as jsonb), e.g. a reason a refusal named in its detail.
   */
  onFailed?: Record<string, string>
  /**
   * Which failed rows are this engine's, when engines share a table (exposure's check and issue both
   * fail notices to not_sent): SQL over the table's columns, for stats, failedRows and retry.
   */
  failedScope?: string
  /** What `retry` puts back besides the queue columns (column → SQL value), undoing onFailed. */
  onRetry?: Record<string, string>
  /** Where the queue's events go: a table with (key, kind, detail) columns; default queue_events. */
  events?: { table: string; key: string }
}

export interface Failure {
  id: string
  /** The error, for last_error and the event: never personal data (errorText gives SQLSTATEs, not messages). */
  error: string
  /** Refused for good (a 4xx that will not change): fail now, whatever the attempts. */
  permanent?: boolean
  /** Wait this long and spend no attempt (a 429's Retry-After, a quota, a pause). */
  postponeSeconds?: number
  /** More for the event (status codes, reasons); never personal data. */
  detail?: object
}

export interface FailResult { id: string; attempts: number; failed: boolean; retryAt: Date | null }

export interface QueueStats {
  engine: string
  waiting: number
  inFlight: number
  retrying: number
  failed: number
  oldestWaitingSeconds: number | null
}

/**
 * Due now: the engine's work, not failed, not backing off, not under a live lease. Bare column names,
 * as `ready` is: use it where the spec's table is the only one in scope (a claim's inner select).
 */
export function due(spec: QueueSpec): string {
  return `(${spec.ready}) AND failed_at IS NULL AND (retry_at IS NULL OR retry_at <= now()) AND (claimed_until IS NULL OR claimed_until < now())`
}

function keyCast(spec: QueueSpec) {
  return `::${spec.keyType}`
}

function sets(map: Record<string, string> | undefined, when?: string): string {
  return Object.entries(map ?? {}).map(([col, value]) => `, ${col} = ${when ? `CASE WHEN ${when} THEN ${value} ELSE t.${col} END` : value}`).join('')
}

export interface ClaimOptions {
  /** Extra condition over the table's bare columns; its parameters are $1, $2, … of `params`. */
  where?: string
  params?: unknown[]
  /** More columns to return, over alias `t` (subselects may join other tables). */
  returning?: string
  /**
   * claim only: the effect gate in the claim itself, for an engine that hands each row over as soon
   * as it has it (send): SET over alias `t` (status = 'sending'), applied by the statement that takes
   * the claim, so the rows it returns are this worker's and no longer due, in one write. Rows not
   * started after all go back with release(…, undo).
   */
  hold?: string
}

/** The caller's extra condition, its $n moved past the statement's own parameters. */
function extra(opts: ClaimOptions, after: number): string {
  return opts.where ? `AND (${opts.where.replace(/\$(\d+)/g, (_, n) => `$${Number(n) + after}`)})` : ''
}

// Work is started no later than this before its lease ends (a quarter of shorter leases): clocks, a slow call's start.
const LEASE_MARGIN_MS = 5000

/**
 * The end of a lease about to be claimed, as this process sees it: read before the claim, less a
 * margin, so it is never later than the database's. Work started before it cannot have been taken
 * over (another worker's claim waits for the database's end), so an engine that checks it before
 * each call needs no statement per call to renew or confirm its claim.
 */
export function leaseEnd(spec: QueueSpec, now = Date.now()): number {
  return now + spec.leaseSeconds * 1000 - Math.min(LEASE_MARGIN_MS, spec.leaseSeconds * 250)
}

/**
 * Claims up to `limit` due rows for `worker` with the spec's lease, in the spec's order. Returns
 * them with `id` (the key as text) and `attempts`. A row whose previous holder's lease ran out
 * counts that as an attempt; one out of attempts that way fails here and is not returned.
 */
export async function claim<R extends Record<string, any> = Record<string, any>>(
  q: Queryable, spec: QueueSpec, worker: string, limit: number, opts: ClaimOptions = {},
): Promise<(R & { id: string; attempts: number })[]> {
  // Picked in order under row locks, numbered (the CTE keeps its order), updated, returned in that order.
  const rows = await q.query(
    `WITH picked AS (SELECT ${spec.key} AS k FROM ${spec.table} WHERE ${due(spec)} ${extra(opts, 3)}
                     ORDER BY ${spec.order} LIMIT $2 FOR UPDATE SKIP LOCKED),
     ranked AS (SELECT k, row_number() OVER () AS rank FROM picked),
     claimed AS (
       UPDATE ${spec.table} t SET claimed_by = $1, claimed_until = now() + make_interval(secs => $3),
         attempts = t.attempts + (t.claimed_by IS NOT NULL)::int,
         last_error = CASE WHEN t.claimed_by IS NOT NULL THEN 'lease ran out: its worker stopped renewing it' ELSE t.last_error END
         ${opts.hold ? `, ${opts.hold}` : ''}
       FROM ranked WHERE t.${spec.key} = ranked.k
       RETURNING ranked.rank, t.${spec.key}::text AS id, t.attempts${opts.returning ? `, ${opts.returning}` : ''})
     SELECT * FROM claimed ORDER BY rank`,
    [worker, limit, spec.leaseSeconds, ...(opts.params ?? [])])
  for (const r of rows) delete r.rank
  const dead = rows.filter((r) => r.attempts >= spec.retry.maxAttempts)
  if (dead.length === 0) return rows as any
  await fail(q, spec, worker, dead.map((r) => ({
    id: r.id, error: `its worker stopped during each of ${r.attempts} attempts (killed, or out of memory?)`, permanent: true,
  })), { counted: true })
  const gone = new Set(dead.map((r) => r.id))
  return rows.filter((r) => !gone.has(r.id)) as any
}

/**
 * Locks up to `limit` due rows for the caller's transaction (FOR UPDATE SKIP LOCKED, no lease): other
 * workers skip them until it commits, and a crash gives them back by rolling back.
 */
export async function claimInTx<R extends Record<string, any> = Record<string, any>>(
  tx: Queryable, spec: QueueSpec, limit: number, opts: ClaimOptions = {},
): Promise<(R & { id: string; attempts: number })[]> {
  return tx.query(
    `SELECT t.${spec.key}::text AS id, t.attempts${opts.returning ? `, ${opts.returning}` : ''} FROM ${spec.table} t
     WHERE ${due(spec)} ${extra(opts, 1)}
     ORDER BY ${spec.order} LIMIT $1 FOR UPDATE SKIP LOCKED`,
    [limit, ...(opts.params ?? [])]) as any
}

/**
 * The effect gate. Applies `set` (the move to the in-flight state, e.g. status = 'sending') to the
 * rows whose claim this worker still holds with a live lease, and returns their ids: only those may
 * be handed to the outside world. Checking ownership and moving in one statement is what makes it
 * safe: a row taken over by another worker after our lease ran out is not returned here, and a row
 * moved here is no longer due, so no other worker can claim it after. A row that left the engine's
 * work meanwhile (`ready` no longer true: cancelled, timed out) is not moved either.
 * `set` may use parameters from $3 on (`params`).
 */
export async function hold(q: Queryable, spec: QueueSpec, worker: string, ids: string[], set: string, params: unknown[] = []): Promise<Set<string>> {
  if (ids.length === 0) return new Set()
  const rows = await q.query(
    `UPDATE ${spec.table} t SET ${set}
     WHERE t.${spec.key} = ANY($1::${spec.keyType}[]) AND t.claimed_by = $2 AND t.claimed_until > now() AND (${spec.ready})
     RETURNING t.${spec.key}::text AS id`, [ids, worker, ...params])
  return new Set(rows.map((r) => r.id))
}

/** Extends this worker's leases on `ids`; returns those still its own. */
export async function heartbeat(q: Queryable, spec: QueueSpec, worker: string, ids: string[], leaseSeconds = spec.leaseSeconds): Promise<Set<string>> {
  if (ids.length === 0) return new Set()
  const rows = await q.query(
    `UPDATE ${spec.table} t SET claimed_until = now() + make_interval(secs => $3)
     WHERE t.${spec.key} = ANY($1::${spec.keyType}[]) AND t.claimed_by = $2 RETURNING t.${spec.key}::text AS id`, [ids, worker, leaseSeconds])
  return new Set(rows.map((r) => r.id))
}

export interface FinishOptions {
  /** More SET, over alias `t` and the outcome `v` (columns typed by `columns`). */
  set?: string
  /** The outcome's columns besides id, as in json_to_recordset: 'status text, units int'. */
  columns?: string
  /** Remove the rows (the work is done and nothing about it stays in this table). */
  delete?: boolean
  /** Only rows meeting this too (over `t` and `v`); the others keep their claim for the caller to settle. */
  where?: string
}

/**
 * Records outcomes on the rows this worker still holds (`worker` null: rows this transaction locked
 * with claimInTx), clearing their claim and retry state; returns the ids recorded. An outcome for a
 * row another worker has taken meanwhile is not recorded: that worker will record its own.
 */
export async function finish(q: Queryable, spec: QueueSpec, worker: string | null, rows: ({ id: string } & Record<string, unknown>)[], opts: FinishOptions = {}): Promise<Set<string>> {
  if (rows.length === 0) return new Set()
  const from = `json_to_recordset($1::json) AS v(id text${opts.columns ? `, ${opts.columns}` : ''})`
  const owned = `t.${spec.key} = v.id${keyCast(spec)} AND ($2::text IS NULL OR t.claimed_by = $2)${opts.where ? ` AND (${opts.where})` : ''}`
  const sql = opts.delete
    ? `DELETE FROM ${spec.table} t USING ${from} WHERE ${owned} RETURNING t.${spec.key}::text AS id`
    : `UPDATE ${spec.table} t SET ${[...cleared(opts.set), ...(opts.set ? [opts.set] : [])].join(', ')}
         FROM ${from} WHERE ${owned} RETURNING t.${spec.key}::text AS id`
  const done = await q.query(sql, [JSON.stringify(rows), worker])
  return new Set(done.map((r) => r.id))
}

/** The queue columns a finish clears, less those the caller's `set` assigns itself (a schedule's next retry_at). */
function cleared(set = ''): string[] {
  return ['claimed_by = NULL', 'claimed_until = NULL', 'attempts = 0', 'retry_at = NULL', 'last_error = NULL']
    .filter((a) => !new RegExp(`(^|,)\\s*${a.split(' ')[0]}\\s*=`).test(set))
}

/**
 * An attempt failed: each row waits its backoff (computed here in SQL from the spec's policy), or
 * waits as told without spending an attempt (postponeSeconds), or, out of attempts or refused for
 * good, fails visibly: failed_at, last_error and the engine's own terminal state (onFailed). The
 * event goes in the same statement. Only rows this worker holds (null: locked by this transaction).
 * `counted`: the attempt was already counted (a lease that ran out, counted by the claim).
 */
export async function fail(q: Queryable, spec: QueueSpec, worker: string | null, failures: Failure[], opts: { counted?: boolean } = {}): Promise<FailResult[]> {
  if (failures.length === 0) return []
  const r = spec.retry
  const spent = opts.counted ? 't.attempts' : 't.attempts + 1'
  const terminal = `f.postpone IS NULL AND (f.permanent OR ${spent} >= ${r.maxAttempts})`
  // The exponent is capped: a schedule that never fails for good may fail thousands of times in a row,
  // and factor^1000 overflows numeric long after the cap has taken over.
  const wait = `least(${r.capSeconds}, ${r.baseSeconds} * power(${r.factor}, least(${spent} - 1, 60))) * (1 + ${r.jitter} * (2 * random() - 1))`
  const rows = await q.query(
    `WITH f AS (SELECT * FROM json_to_recordset($1::json) AS f(id text, error text, permanent boolean, postpone double precision, detail jsonb)),
     upd AS (
       UPDATE ${spec.table} t SET claimed_by = NULL, claimed_until = NULL, last_error = f.error,
         attempts = CASE WHEN f.postpone IS NULL THEN ${spent} ELSE t.attempts END,
         failed_at = CASE WHEN ${terminal} THEN now() END,
         retry_at = CASE WHEN f.postpone IS NOT NULL THEN now() + make_interval(secs => f.postpone)
                         WHEN ${terminal} THEN NULL ELSE now() + make_interval(secs => ${wait}) END
         ${sets(spec.onFailed, terminal)}
       FROM f WHERE t.${spec.key} = f.id${keyCast(spec)} AND ($2::text IS NULL OR t.claimed_by = $2)
       RETURNING t.${spec.key}::text AS id, t.attempts, t.failed_at IS NOT NULL AS failed, t.retry_at, f.error, f.detail, f.postpone),
     ev AS (SELECT id, CASE WHEN failed THEN 'failed' WHEN postpone IS NOT NULL THEN 'postponed' ELSE 'retrying' END AS kind,
              jsonb_build_object('attempts', attempts, 'error', error, 'retry_at', retry_at) || coalesce(detail, '{}'::jsonb) AS detail FROM upd),
     logged AS (${insertEvents(spec, 'ev')})
     SELECT id, attempts, failed, retry_at FROM upd`,
    [JSON.stringify(failures.map((x) => ({ id: x.id, error: x.error, permanent: x.permanent ?? false, postpone: x.postponeSeconds ?? null, detail: x.detail ?? null }))), worker])
  return rows.map((x) => ({ id: x.id, attempts: x.attempts, failed: x.failed, retryAt: x.retry_at ? new Date(x.retry_at) : null }))
}

/**
 * Gives back rows this worker claimed and did not start (a graceful stop): due again at once, no
 * attempt spent. `undo`: SET that takes back a claim's `hold` (status = 'created').
 */
export async function release(q: Queryable, spec: QueueSpec, worker: string, ids: string[], undo?: string): Promise<number> {
  if (ids.length === 0) return 0
  const rows = await q.query(
    `UPDATE ${spec.table} t SET claimed_by = NULL, claimed_until = NULL${undo ? `, ${undo}` : ''}
     WHERE t.${spec.key} = ANY($1::${spec.keyType}[]) AND t.claimed_by = $2 RETURNING t.${spec.key}`, [ids, worker])
  return rows.length
}

/** `herald queue retry`: failed rows (all, or these) are due again with their attempts anew; each gets a retry_requested event. */
export async function retry(q: Queryable, spec: QueueSpec, ids?: string[], by = 'operator'): Promise<string[]> {
  const rows = await q.query(
    `WITH upd AS (
       UPDATE ${spec.table} t SET failed_at = NULL, attempts = 0, retry_at = NULL, last_error = NULL, claimed_by = NULL, claimed_until = NULL
         ${sets(spec.onRetry)}
       WHERE ${failedOf(spec)} AND ($1::text[] IS NULL OR t.${spec.key}::text = ANY($1)) RETURNING t.${spec.key}::text AS id),
     ev AS (SELECT id, 'retry_requested' AS kind, jsonb_build_object('by', $2::text) AS detail FROM upd),
     logged AS (${insertEvents(spec, 'ev')})
     SELECT id FROM upd`, [ids ?? null, by])
  return rows.map((r) => r.id)
}

/** This engine's failed rows (see failedScope); bare columns, as in `ready`. */
function failedOf(spec: QueueSpec): string {
  return `(failed_at IS NOT NULL${spec.failedScope ? ` AND (${spec.failedScope})` : ''})`
}

function insertEvents(spec: QueueSpec, from: string): string {
  return spec.events
    ? `INSERT INTO ${spec.events.table} (${spec.events.key}, kind, detail) SELECT id${keyCast(spec)}, kind, detail FROM ${from}`
    : `INSERT INTO queue_events (engine, item, kind, detail) SELECT '${spec.engine}', id, kind, detail FROM ${from}`
}

/** The queue's events for some rows, oldest first. */
export async function events(q: Queryable, spec: QueueSpec, ids: string[]): Promise<{ id: string; kind: string; detail: unknown; at: Date }[]> {
  if (ids.length === 0) return []
  const rows = spec.events
    ? await q.query(`SELECT ${spec.events.key}::text AS id, kind, detail, at FROM ${spec.events.table} WHERE ${spec.events.key} = ANY($1::${spec.keyType}[]) ORDER BY at, id`, [ids])
    : await q.query(`SELECT item AS id, kind, detail, at FROM queue_events WHERE engine = $2 AND item = ANY($1) ORDER BY at, id`, [ids, spec.engine])
  return rows.map((r) => ({ id: r.id, kind: r.kind, detail: r.detail, at: new Date(r.at) }))
}

/** Failed rows, newest first, with their error. */
export async function failedRows(q: Queryable, spec: QueueSpec, limit = 100): Promise<{ id: string; attempts: number; error: string | null; failedAt: Date }[]> {
  const rows = await q.query(
    `SELECT ${spec.key}::text AS id, attempts, last_error, failed_at FROM ${spec.table} WHERE ${failedOf(spec)} ORDER BY failed_at DESC LIMIT $1`, [limit])
  return rows.map((r) => ({ id: r.id, attempts: r.attempts, error: r.last_error, failedAt: new Date(r.failed_at) }))
}

/** Waiting (due now), in flight (under a live lease), retrying (backing off, postponed or scheduled), failed; the oldest waiting row's age. */
export async function stats(q: Queryable, spec: QueueSpec): Promise<QueueStats> {
  const [r] = await q.query(
    `SELECT count(*) FILTER (WHERE w.state = 'waiting')::int AS waiting, count(*) FILTER (WHERE w.state = 'in_flight')::int AS in_flight,
            count(*) FILTER (WHERE w.state = 'retrying')::int AS retrying, count(*) FILTER (WHERE w.state = 'failed')::int AS failed,
            extract(epoch FROM now() - min(w.since) FILTER (WHERE w.state = 'waiting'))::float8 AS oldest
     FROM (SELECT CASE WHEN failed_at IS NOT NULL THEN 'failed' WHEN claimed_until > now() THEN 'in_flight'
                       WHEN retry_at > now() THEN 'retrying' ELSE 'waiting' END AS state, ${spec.since ?? 'NULL::timestamptz'} AS since
           FROM ${spec.table} WHERE (${spec.ready}) OR ${failedOf(spec)}) w`)
  return { engine: spec.engine, waiting: r.waiting, inFlight: r.in_flight, retrying: r.retrying, failed: r.failed, oldestWaitingSeconds: r.oldest ?? null }
}
