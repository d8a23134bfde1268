/**
 * Facts benchmark: the billing and status queries of one busy service-day, read through the
 * all-time view (UNION ALL, as migration 007 defines it) and through the same view built with
 * UNION, on PostgreSQL. Targets: UNION ALL at least 5× faster than UNION, and the billing query
 * under 150 ms (GOV.UK Notify measured 759 ms with UNION for a day of about 220,000 texts).
 *
 *   npm run bench:facts [-- --rows 10000000 --busy 220000 --runs 7 --keep --db-url postgres://…]
 *
 * Setup, not timed but reported: a fresh database on --db-url's server (default DATABASE_URL, else
 * the local one), 50 services with 4 templates each, and --rows notifications over the 90 local days
 * up to yesterday, generated inside PostgreSQL a day at a time in time order (an append-only
 * table's physical order). Days older than a week are in notification_history, as retention leaves
 * them (no recipient, no test-key rows); the last week in notifications. The busy service-day, two
 * days ago and so still in notifications, is --busy rows of one service (default 2.2% of --rows:
 * 220,000 of 10,000,000); every other service-day has the rest spread evenly. Recipients are
 * random bytes of a real ciphertext's size, not sealed: no query here reads them. The tables'
 * secondary indexes are dropped for the load and built again after it, then both tables are
 * vacuumed and analysed, as autovacuum would have left them.
 *
 * Timed: BILLING_SQL and STATUS_SQL (src/messaging/facts/facts.ts) for the busy service-day through
 * each view, one untimed run first, then --runs runs each (median and min, milliseconds, from this
 * process); EXPLAIN (ANALYZE, BUFFERS) of each (whether UNION sorted on disk); and computeDay, the
 * facts of that service-day replaced in one transaction, once. Progress to stderr; the summary
 * (JSON) and a Markdown table to stdout.
 */
import { readFileSync } from 'node:fs'
import { performance } from 'node:perf_hooks'
import { parseArgs } from 'node:util'
import { migrate } from '../src/db/migrate.ts'
import type { Db } from '../src/db/types.ts'
import { BILLABLE, BILLING_SQL, computeDay, STATUS_SQL } from '../src/messaging/facts/facts.ts'
import { createService, createTemplate } from '../src/messaging/services.ts'

const { values: args } = parseArgs({
  options: {
    rows: { type: 'string', default: '10000000' },
    busy: { type: 'string' },
    runs: { type: 'string', default: '7' },
    keep: { type: 'boolean', default: false },
    'db-url': { type: 'string' },
  },
})
const N = Number(args.rows)
const BUSY = args.busy === undefined ? Math.round(N * 0.022) : Number(args.busy)
const RUNS = Number(args.runs)
if (!Number.isInteger(N) || N < 10_000) throw new Error('--rows must be a whole number ≥ 10,000')
if (!Number.isInteger(BUSY) || BUSY < 1 || BUSY >= N / 2) throw new Error('--busy must be a whole number ≥ 1 and under half of --rows')
if (!Number.isInteger(RUNS) || RUNS < 1) throw new Error('--runs must be a whole number ≥ 1')
if (args['db-url']) process.env.DATABASE_URL = args['db-url'] // read by targets.ts as it loads, hence the late import
const { freshDb } = await import('./targets.ts')

const SERVICES = 50
const TEMPLATES = 4 // a service
const DAYS = 90
const KEPT_DAYS = 7 // the default retention: older days are in notification_history
const BUSY_DAYS_AGO = 2
const progress = (msg: string) => process.stderr.write(`${msg}\n`)
const r1 = (x: number) => Math.round(x * 10) / 10
const thousands = (x: number) => x.toLocaleString('en-US')

/**
 * One local day's rows, generated and inserted in time order. A row is its number i (its id and
 * every other value derive from it, so a rerun writes the same rows), its instant and its service
 * (1-based); the busy service (1) has no background rows on its busy day, only its $6 busy rows.
 * $1 service ids, $2 template ids (service s: 4(s-1)+1 …), $3 local day, $4…$5 background row
 * numbers, $6 busy rows, $7 time zone, $8 percent of rows from test keys, $9 the busy rows' first number.
 */
function daySql(table: 'notifications' | 'notification_history'): string {
  const shared: [string, string][] = [
    ['id', `md5(i::text || 'n')::uuid`],
    ['service_id', `($1::uuid[])[svc]`],
    ['template_id', `($2::uuid[])[(svc - 1) * ${TEMPLATES} + 1 + (h / 100000) % ${TEMPLATES}]`],
    ['template_version', '1'],
    ['notification_type', `'sms'`],
    ['api_key_id', `CASE WHEN jobbed THEN NULL ELSE md5('key' || svc)::uuid END`],
    ['key_type', `CASE WHEN k < 5 THEN 'team' WHEN k < 5 + $8::int THEN 'test' ELSE 'normal' END`],
    ['job_id', `CASE WHEN jobbed THEN md5(svc || $3::text || (h / 100000000) % 3)::uuid END`],
    ['job_row', `CASE WHEN jobbed THEN 2 + i % 50000 END`],
    ['reference', `CASE WHEN jobbed THEN NULL ELSE 'ref-' || i END`],
    ['international', 'intl'],
    ['status', 'status'],
    ['billable_units', `CASE WHEN handed THEN CASE WHEN (h / 10) % 100 < 70 THEN 1 WHEN (h / 10) % 100 < 95 THEN 2 ELSE 3 END END`],
    ['rate_multiplier', `CASE WHEN handed THEN CASE WHEN intl THEN 2 ELSE 1 END END`],
    ['provider', `CASE WHEN handed THEN CASE WHEN h % 10 < 7 THEN 'twilio' ELSE 'vonage' END END`],
    ['created_at', 'at'],
    ['sent_at', `CASE WHEN handed THEN at + interval '1 second' END`],
    ['completed_at', 'done'],
    ['updated_at', `coalesce(done, CASE WHEN handed THEN at + interval '1 second' END)`],
  ]
  // What only notifications keeps: the recipient (hash 32 bytes, ciphertext 41 as Sealer makes them), personalisation, the provider's id.
  const live: [string, string][] = [
    ['recipient_hash', 'sha256(int8send(i))'],
    ['recipient_ct', `'\\x01'::bytea || substr(sha512(int8send(i)), 1, 40)`],
    ['personalisation_ct', `sha512(int8send(-i))`],
    ['provider_ref', `CASE WHEN handed THEN 'SM' || md5(i::text) END`],
    ['attempts', 'CASE WHEN handed THEN 1 ELSE 0 END'],
  ]
  const cols = table === 'notifications' ? [...shared, ...live] : shared
  // Masked to 63 bits: abs() of the smallest bigint would fail.
  const hash = (seed: number, of = 'i') => `(hashint8extended(${of}, ${seed}) & 9223372036854775807)`
  return `WITH day AS (SELECT ($3::date)::timestamp AT TIME ZONE $7 AS start, ($3::date + 1)::timestamp AT TIME ZONE $7 AS stop)
    INSERT INTO ${table} (${cols.map((c) => c[0]).join(', ')})
    SELECT ${cols.map((c) => c[1]).join(', ')} FROM (
      SELECT *, CASE WHEN status IN ('created', 'sending', 'pending') THEN NULL ELSE at + (5 + h % 55) * interval '1 second' END AS done
      FROM (
        SELECT *, status NOT IN ('created', 'validation-failed', 'cancelled', 'technical-failure') AS handed,
               (h / 1000000) % 100 < 40 AS jobbed, (h / 1000) % 100 < 3 AS intl
        FROM (
          SELECT *, CASE WHEN u < 850 THEN 'delivered' WHEN u < 870 THEN 'sent' WHEN u < 880 THEN 'sending' WHEN u < 890 THEN 'pending'
                         WHEN u < 930 THEN 'temporary-failure' WHEN u < 970 THEN 'permanent-failure' WHEN u < 985 THEN 'technical-failure'
                         WHEN u < 995 THEN 'validation-failed' WHEN u < 998 THEN 'cancelled' ELSE 'created' END AS status
          FROM (
            SELECT i, at, svc, ${hash(1)} % 1000 AS u, ${hash(2)} % 100 AS k, ${hash(3)} AS h
            FROM (
              SELECT g AS i, start + (stop - start) * ((g - $4::bigint + 0.5) / ($5::bigint - $4::bigint))::float8 AS at,
                     CASE WHEN $6::bigint > 0 THEN 2 + ${hash(0, 'g')} % ${SERVICES - 1} ELSE 1 + ${hash(0, 'g')} % ${SERVICES} END AS svc
              FROM day, generate_series($4::bigint, $5::bigint - 1) g
              UNION ALL
              SELECT $9::bigint + b, start + (stop - start) * ((b + 0.5) / $6::bigint)::float8, 1
              FROM day, generate_series(0, $6::bigint - 1) b
            ) gen
          ) hashed
        ) s
      ) t
    ) r
    ORDER BY at`
}

/** Generates the notifications: returns the busy service, its day (local), the load's seconds. */
async function load(db: Db): Promise<{ serviceId: string; day: string; seconds: number }> {
  const services: string[] = []
  const templates: string[] = []
  for (let s = 1; s <= SERVICES; s++) {
    const service = await createService(db, { name: `Service ${String(s).padStart(2, '0')}`, smsSender: 'BENCH', messageLimit: 1_000_000 })
    services.push(service.id)
    for (let t = 1; t <= TEMPLATES; t++) templates.push((await createTemplate(db, service.id, `Template ${t}`, 'Hello ((name)), ref ((ref)).', 'bench')).id)
  }
  const [{ tz, first }] = await db.query(`SELECT timezone AS tz, ((now() AT TIME ZONE timezone)::date - $2::int)::text AS first FROM services WHERE id = $1`,
    [services[0], DAYS])
  const days = await db.query<{ day: string }>(`SELECT (($1::date + k)::date)::text AS day FROM generate_series(0, $2::int - 1) k`, [first, DAYS])
  const busyDay = DAYS - BUSY_DAYS_AGO // days[DAYS - 1] is yesterday

  // Indexes (primary keys too: random uuids) are built once after the load, by sorting, rather than row by row.
  const indexes = await db.query<{ drop: string; create: string }>(
    `SELECT CASE WHEN c.oid IS NULL THEN format('DROP INDEX %s', i.indexrelid::regclass) ELSE format('ALTER TABLE %s DROP CONSTRAINT %I', i.indrelid::regclass, c.conname) END AS drop,
            CASE WHEN c.oid IS NULL THEN pg_get_indexdef(i.indexrelid) ELSE format('ALTER TABLE %s ADD CONSTRAINT %I %s', i.indrelid::regclass, c.conname, pg_get_constraintdef(c.oid)) END AS create
     FROM pg_index i LEFT JOIN pg_constraint c ON c.conindid = i.indexrelid AND c.contype = 'p'
     WHERE i.indrelid IN ('notifications'::regclass, 'notification_history'::regclass)`)
  for (const i of indexes) await db.query(i.drop)

  const background = N - BUSY
  const t0 = performance.now()
  let written = 0
  for (let d = 0; d < DAYS; d++) {
    const lo = Math.floor((d * background) / DAYS)
    const hi = Math.floor(((d + 1) * background) / DAYS)
    const busy = d === busyDay ? BUSY : 0
    const kept = d >= DAYS - KEPT_DAYS
    await db.transaction(async (tx) => {
      await tx.query(`SET LOCAL work_mem = '256MB'`) // the day's sort into time order, in memory
      await tx.query(`SET LOCAL jit = off`) // compiling the expressions costs more than it saves on a day's rows
      await tx.query(daySql(kept ? 'notifications' : 'notification_history'),
        [services, templates, days[d].day, lo, hi, busy, tz, kept ? 5 : 0, background])
    })
    written += hi - lo + busy
    if ((d + 1) % 10 === 0 || d === DAYS - 1) {
      const s = (performance.now() - t0) / 1000
      progress(`load: ${d + 1}/${DAYS} days, ${thousands(written)} rows, ${r1(s)} s (${thousands(Math.round(written / s))} rows/s)`)
    }
  }
  const t1 = performance.now()
  await db.transaction(async (tx) => {
    await tx.query(`SET LOCAL maintenance_work_mem = '512MB'`)
    for (const i of indexes) await tx.query(i.create)
  })
  const t2 = performance.now()
  progress(`indexes: ${indexes.length} built in ${r1((t2 - t1) / 1000)} s`)
  await db.query('VACUUM (ANALYZE) notifications')
  await db.query('VACUUM (ANALYZE) notification_history')
  const t3 = performance.now()
  progress(`vacuum and analyse: ${r1((t3 - t2) / 1000)} s`)
  return { serviceId: services[0], day: days[busyDay].day, seconds: (t3 - t0) / 1000 }
}

/** The all-time view again as UNION, from the text of the migration that defines it, so the two differ in that word alone. */
function unionView(): string {
  const migration = readFileSync(new URL('../src/db/migrations/007_retention.sql', import.meta.url), 'utf8')
  const def = /CREATE VIEW notifications_all_time_view AS([\s\S]*?);/.exec(migration)?.[1]
  if (!def || def.match(/\bUNION ALL\b/g)?.length !== 1) throw new Error('007_retention.sql: no view notifications_all_time_view with one UNION ALL')
  return `CREATE VIEW notifications_all_time_union AS${def.replace(/\bUNION ALL\b/, 'UNION')}`
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b)
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2
}

interface Timing {
  query: string; view: string; median_ms: number; min_ms: number; groups: number; counted: number
  explain_ms: number; jit_ms: number; on_disk: boolean; sorts: string[]; plan: string[]; answer: string
}

/** One query through one view: an untimed run (caches warm), RUNS timed runs, then EXPLAIN (ANALYZE, BUFFERS). */
async function measure(db: Db, query: string, view: string, sql: string, params: unknown[]): Promise<Timing> {
  const rows = await db.query(sql, params)
  const ms: number[] = []
  for (let k = 0; k < RUNS; k++) {
    const t = performance.now()
    await db.query(sql, params)
    ms.push(performance.now() - t)
  }
  const plan = (await db.query(`EXPLAIN (ANALYZE, BUFFERS) ${sql}`, params)).map((r) => r['QUERY PLAN'] as string)
  const text = plan.join('\n')
  progress(`${query} through ${view}: median ${r1(median(ms))} ms, min ${r1(Math.min(...ms))} ms, ${rows.length} groups`)
  return {
    query, view, median_ms: r1(median(ms)), min_ms: r1(Math.min(...ms)), groups: rows.length,
    counted: rows.reduce((n, r) => n + Number(r.notifications_sent ?? r.notification_count), 0),
    explain_ms: r1(Number(/Execution Time: ([\d.]+)/.exec(text)?.[1])),
    jit_ms: r1(Number(/JIT:[\s\S]*Total ([\d.]+) ms/.exec(text)?.[1] ?? 0)), // compiling, when the plan's cost passes jit_above_cost
    on_disk: /Disk: |Disk Usage: /.test(text),
    sorts: [...new Set(plan.filter((l) => /Sort Method|Disk Usage/.test(l)).map((l) => l.trim().replace(/\s+/g, ' ')))],
    plan, answer: JSON.stringify(rows.map((r) => Object.values(r).join('|')).sort()),
  }
}

async function main() {
  const fresh = await freshDb('postgres', 'facts', 1) // one connection: every statement on the same warm backend
  const db = fresh.db
  try {
    await migrate(db)
    const [server] = await db.query(`SELECT current_database() AS name, current_setting('server_version') AS version,
      current_setting('work_mem') AS work_mem, current_setting('shared_buffers') AS shared_buffers, current_setting('jit') AS jit`)
    progress(`PostgreSQL ${server.version} (work_mem ${server.work_mem}, shared_buffers ${server.shared_buffers}, jit ${server.jit}), database ${server.name}: `
      + `${thousands(N)} notifications over ${DAYS} days, ${SERVICES} services, a busy service-day of ${thousands(BUSY)}`)
    const loaded = await load(db)
    await db.query(unionView())
    const [sizes] = await db.query(`SELECT (SELECT count(*) FROM notifications)::int AS live, (SELECT count(*) FROM notification_history)::int AS history,
      pg_total_relation_size('notifications') + pg_total_relation_size('notification_history') AS bytes`)
    const [bounds] = await db.query(`SELECT ($2::date)::timestamp AT TIME ZONE timezone AS start, ($2::date + 1)::timestamp AT TIME ZONE timezone AS end
      FROM services WHERE id = $1`, [loaded.serviceId, loaded.day])
    const span = [loaded.serviceId, bounds.start, bounds.end]

    const views = { 'UNION ALL': 'notifications_all_time_view', UNION: 'notifications_all_time_union' }
    const queries = { billing: { sql: BILLING_SQL, params: [...span, BILLABLE] }, status: { sql: STATUS_SQL, params: span } }
    const timings: Timing[] = []
    for (const [query, q] of Object.entries(queries)) {
      for (const [view, name] of Object.entries(views)) timings.push(await measure(db, query, view, q.sql(name), q.params))
      if (timings.at(-1)!.answer !== timings.at(-2)!.answer) throw new Error(`${query}: the two views gave different answers`)
    }

    const t = performance.now()
    const facts = await computeDay(db, loaded.serviceId, loaded.day)
    const computeMs = performance.now() - t

    const get = (query: string, view: string) => timings.find((x) => x.query === query && x.view === view)!
    const speedup = (query: string) => r1(get(query, 'UNION').median_ms / get(query, 'UNION ALL').median_ms)
    const met = { union_all_5x: speedup('billing') >= 5 && speedup('status') >= 5, billing_under_150ms: get('billing', 'UNION ALL').median_ms < 150 }
    const result = {
      postgres: server.version, work_mem: server.work_mem, shared_buffers: server.shared_buffers, jit: server.jit, rows: N, in_notifications: sizes.live,
      in_history: sizes.history, tables_mb: Math.round(Number(sizes.bytes) / 2 ** 20), busy_service_day: { service: loaded.serviceId, day: loaded.day, rows: BUSY },
      load_s: r1(loaded.seconds), runs: RUNS,
      timings: timings.map(({ plan, answer, ...t }) => t),
      speedup: { billing: speedup('billing'), status: speedup('status') },
      compute_day_ms: r1(computeMs), compute_day_rows: facts,
      targets: 'UNION ALL ≥ 5× faster than UNION (both queries); billing (UNION ALL) < 150 ms', met,
    }
    console.log(JSON.stringify(result, null, 2))
    for (const x of timings) {
      console.log(`\n${x.query} through ${x.view}, EXPLAIN (ANALYZE, BUFFERS), top of the plan:\n${x.plan.slice(0, x.view === 'UNION' ? 16 : 10).join('\n')}`)
    }
    console.log('\n| query | view | median ms | min ms | EXPLAIN ms | JIT ms | groups | notifications counted | sorts |')
    console.log('| --- | --- | --- | --- | --- | --- | --- | --- | --- |')
    for (const x of timings) {
      console.log(`| ${x.query} | ${x.view} | ${x.median_ms} | ${x.min_ms} | ${x.explain_ms} | ${x.jit_ms} | ${x.groups} | ${thousands(x.counted)} | `
        + `${x.on_disk ? 'on disk: ' : ''}${x.sorts.join('; ') || '–'} |`)
    }
    console.log(`\ncomputeDay (both facts of the service-day, one transaction): ${r1(computeMs)} ms, ${facts.billing} billing rows, ${facts.status} status rows`)
    console.log(`UNION ALL is ${speedup('billing')}× faster for billing, ${speedup('status')}× for status: ${met.union_all_5x ? 'met' : 'NOT met'} (≥ 5×); `
      + `billing ${get('billing', 'UNION ALL').median_ms} ms: ${met.billing_under_150ms ? 'met' : 'NOT met'} (< 150 ms)`)
    if (args.keep) progress(`kept the database ${server.name}`)
  } finally {
    if (args.keep) await db.close()
    else await fresh.drop().catch((e) => progress(`dropping the database: ${e}`))
  }
}

await main()
