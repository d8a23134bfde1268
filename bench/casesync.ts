/**
 * Case sync benchmark: N changed cases pushed to the CommCare sandbox at a set latency, with the
 * outbound engine's concurrency. Target: ≥ 90% of concurrency / latency (the network wait, not
 * Herald, is the limit), and no duplicates in the sandbox.
 *
 *   npm run bench:casesync [-- --cases 10000 --concurrency 32 --latency 50 --db postgres|pglite --pool 8
 *                              --sandbox process|inprocess --json]
 *
 * Setup, not timed: a fresh database (PostgreSQL: created on DATABASE_URL's server, default the local
 * one, and dropped after; PGlite: a data folder under the system temp folder, removed after), the
 * county list, an export of N rows of N distinct people in participating counties, ingested and linked:
 * N index cases wait in case_sync_queue. The sandbox runs as a process of its own (main.ts), read
 * through its /sandbox/ admin routes, as CommCare is another machine: only Herald's work is in this
 * process (it shares the machine's cores, though). --sandbox inprocess runs it on Herald's event loop.
 *   phase "new":     every case is new to CommCare: one POST each.
 *   phase "changed": every case gets a property CommCare lacks: GET (to follow transfers), then POST.
 * Default --db: postgres when its server answers, else pglite. --pool: PostgreSQL connections (8, as
 * `herald start` opens). Progress goes to stderr; the summary and a Markdown row per phase to stdout.
 */
import { once } from 'node:events'
import { createReadStream, createWriteStream, existsSync, mkdirSync, readFileSync, renameSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { performance } from 'node:perf_hooks'
import { parseArgs } from 'node:util'
import pg from 'pg'
import { casesyncOutEngine, commcareClient } from '../src/casesync/index.ts'
import type { CommCareClient } from '../src/casesync/client.ts'
import { loadConfig } from '../src/config.ts'
import { migrate } from '../src/db/migrate.ts'
import type { Db, Queryable } from '../src/db/types.ts'
import { COLUMNS } from '../src/ingest/eclrs/columns.ts'
import { readRecords } from '../src/ingest/eclrs/records.ts'
import { generateEclrs } from '../src/ingest/generate.ts'
import { parseCountyList, saveCounties } from '../src/link/counties.ts'
import { linkUntilEmpty } from '../src/link/index.ts'
import { createLogger } from '../src/log.ts'
import { startCommCareSandbox, type CommCareSandbox } from '../src/sandbox/commcare/server.ts'
import { defaultDb, spawnSandbox, runInterruptible } from './process.ts'
import { freshDb, ingest } from './targets.ts'

const { values: args } = parseArgs({
  options: {
    cases: { type: 'string', default: '10000' },
    concurrency: { type: 'string', default: '32' },
    latency: { type: 'string', default: '50' },
    db: { type: 'string' },
    pool: { type: 'string', default: '8' },
    sandbox: { type: 'string', default: 'process' },
    json: { type: 'boolean', default: false },
  },
})

const N = Number(args.cases)
const C = Number(args.concurrency)
const LATENCY = Number(args.latency)
const POOL = Number(args.pool)
for (const [k, v] of [['cases', N], ['concurrency', C], ['pool', POOL]] as const) {
  if (!Number.isInteger(v) || v < 1) throw new Error(`--${k} must be a whole number ≥ 1`)
}
if (!Number.isFinite(LATENCY) || LATENCY < 0) throw new Error('--latency must be a number of milliseconds ≥ 0')
if (args.sandbox !== 'inprocess' && args.sandbox !== 'process') throw new Error('--sandbox must be inprocess or process')

const COUNTY_FILE = fileURLToPath(new URL('../src/sandbox/commcare/county_list_ny.json', import.meta.url))
const COUNTY_LIST = parseCountyList(JSON.parse(readFileSync(COUNTY_FILE, 'utf8')))
const log = createLogger('silent')
const progress = (msg: string) => process.stderr.write(`${msg}\n`)
const stop = new AbortController()

/**
 * An export of exactly n rows, each a different person in a participating county: generated with
 * some spare rows, then rows of non-participating counties (link ignores them) and repeated
 * date-of-birth-and-name keys (link would merge them) are left out. Cached in the temp folder.
 */
async function exportFile(dir: string, n: number): Promise<string> {
  const file = join(dir, `casesync-${n}.txt`)
  if (existsSync(file)) return file
  const raw = join(dir, `casesync-${n}-raw.txt`)
  progress(`generating ${file}`)
  const participating = new Set(COUNTY_LIST.filter((c) => c.county.participating && c.county.domain).map((c) => String(c.county.fips)))
  await generateEclrs({ rows: Math.ceil(n * 1.15) + 100, version: 3, out: raw, seed: 31 })
  const at = Object.fromEntries(COLUMNS[3].map((c, i) => [c, i]))
  const out = createWriteStream(`${file}.part`, { highWaterMark: 1 << 20 })
  const write = async (b: Buffer) => {
    out.write(b)
    if (!out.write('\n')) await once(out, 'drain')
  }
  const people = new Set<string>()
  let kept = 0
  for await (const r of readRecords(createReadStream(raw))) {
    if (r.line === 1) {
      await write(r.bytes)
      continue
    }
    if (kept === n) break
    const f = r.fields
    const person = `${f[at.PIDDATEOFBIRTH]}|${f[at.PIDLASTNAME].trim().toUpperCase()}|${f[at.PIDFIRSTNAME].trim().split(/\s+/)[0].toUpperCase()}`
    if (r.error || !participating.has(String(Number(f[at.PIDCOUNTYCODE]))) || people.has(person)) continue
    people.add(person)
    await write(r.bytes)
    kept++
  }
  out.end()
  await once(out, 'finish')
  rmSync(raw, { force: true })
  if (kept < n) throw new Error(`the generated export gave only ${kept} usable rows of ${n}`)
  renameSync(`${file}.part`, file)
  return file
}

// ---- Instruments: requests in flight (client side), database calls, the pool's waiters. ----

const now = () => performance.now()

class Meter {
  inflight = 0
  maxInflight = 0
  area = 0 // ∫ inflight dt, ms
  last = now()
  requests = 0
  durations: number[] = []
  stepFirstStart: number | undefined
  stepLastEnd: number | undefined
  tx = { count: 0, ms: [] as number[] }
  queries = { count: 0, ms: 0 }
  poolSamples = 0
  poolWaitingSum = 0
  poolWaitingMax = 0
  poolBusySamples = 0

  tick() {
    const t = now()
    this.area += this.inflight * (t - this.last)
    this.last = t
    return t
  }
  start() {
    const t = this.tick()
    this.stepFirstStart ??= t
    this.inflight++
    this.requests++
    this.maxInflight = Math.max(this.maxInflight, this.inflight)
    return t
  }
  end(started: number) {
    const t = this.tick()
    this.inflight--
    this.stepLastEnd = t
    this.durations.push(t - started)
  }
  reset() {
    Object.assign(this, new Meter())
  }
}
const meter = new Meter()

/** The client's calls to CommCare, counted and timed as Herald sees them (queueing in Node included). */
function instrument(client: CommCareClient) {
  for (const name of ['getCase', 'findByExternalId', 'submitForm', 'countyList'] as const) {
    const call = (client[name] as (...a: unknown[]) => Promise<unknown>).bind(client)
    Object.assign(client, {
      [name]: async (...a: unknown[]) => {
        const started = meter.start()
        try {
          return await call(...a)
        } finally {
          meter.end(started)
        }
      },
    })
  }
  return client
}

/** The database as the engine sees it, with each transaction timed (a wait for a pool connection included). */
function timedDb(db: Db): Db {
  return {
    kind: db.kind,
    async query(sql, params) {
      const t = now()
      try {
        return await db.query(sql, params)
      } finally {
        meter.queries.count++
        meter.queries.ms += now() - t
      }
    },
    exec: (sql) => db.exec(sql),
    copyInto: (table, columns, rows) => db.copyInto(table, columns, rows),
    async transaction<T>(fn: (tx: Queryable) => Promise<T>) {
      const t = now()
      try {
        return await db.transaction(fn)
      } finally {
        meter.tx.count++
        meter.tx.ms.push(now() - t)
      }
    },
    close: () => db.close(),
  }
}

const pct = (xs: number[], p: number) => {
  if (xs.length === 0) return 0
  const s = Float64Array.from(xs).sort()
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]
}
const mean = (xs: number[]) => (xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : 0)
const r1 = (x: number) => Math.round(x * 10) / 10
const r3 = (x: number) => Math.round(x * 1000) / 1000

// ---- The sandbox: in this process, or a process of its own ----

type Stats = CommCareSandbox['stats']
interface CaseView { case_id: string; case_type?: string; properties: Record<string, string | null>; indices: Record<string, { case_id: string }> }
interface Sandbox {
  url: string
  stats(): Promise<Stats>
  cases(domain: string): Promise<CaseView[]>
  /** CPU seconds the sandbox used, when it is a process of its own (Linux /proc). */
  cpuSeconds(): number | undefined
  close(): Promise<void>
}

const sandboxOptions = { user: 'herald', apiKey: 'sandbox', rootDomain: 'ny-covid', latencyMs: LATENCY, seed: 1 }

async function startSandbox(where: string): Promise<Sandbox> {
  if (where === 'inprocess') {
    const s = await startCommCareSandbox(sandboxOptions)
    return { url: s.url, stats: async () => ({ ...s.stats }), cases: async (d) => s.cases(d), cpuSeconds: () => undefined, close: () => s.close() }
  }
  const p = await spawnSandbox('commcare', ['--latency', String(LATENCY), '--seed', '1', '--user', 'herald', '--api-key', 'sandbox', '--root-domain', 'ny-covid'])
  return {
    url: p.url,
    stats: () => p.get<Stats>('/sandbox/stats'),
    cases: (d) => p.get<CaseView[]>(`/sandbox/cases?domain=${encodeURIComponent(d)}`),
    cpuSeconds: () => p.cpuSeconds(),
    close: () => p.close(),
  }
}

// ---- Checks on the sandbox ----

async function domainsOf(db: Db): Promise<string[]> {
  return (await db.query('SELECT DISTINCT domain FROM counties WHERE domain IS NOT NULL ORDER BY 1')).map((r) => r.domain)
}

/** Patient and lab_result cases, counted and checked for duplicates, one domain at a time (each is a copy). */
async function checkSandbox(sandbox: Sandbox, domains: string[], n: number, changed: boolean) {
  let patients = 0
  let labResults = 0
  let noExternalId = 0
  let marked = 0
  const caseIds = new Set<string>()
  const externalIds = new Set<string>()
  const results = new Set<string>()
  for (const domain of domains) {
    for (const c of await sandbox.cases(domain)) {
      const type = c.case_type ?? c.properties.case_type
      if (type === 'patient') {
        patients++
        caseIds.add(c.case_id)
        if (c.properties.external_id) externalIds.add(c.properties.external_id)
        else noExternalId++
        if (c.properties.bench_note === 'changed') marked++
      } else if (type === 'lab_result') {
        labResults++
        results.add(`${c.indices.parent?.case_id}|${c.properties.accession_number}`)
      }
    }
  }
  const checks: Record<string, boolean> = {
    [`patient cases = ${n}`]: patients === n,
    [`distinct patient case_id = ${n}`]: caseIds.size === n,
    [`distinct external_id = ${n}`]: externalIds.size === n && noExternalId === 0,
    'distinct (parent, accession_number) = lab_result cases': results.size === labResults,
    [`lab_result cases = ${n}`]: labResults === n,
  }
  if (changed) checks[`patient cases with bench_note = ${n}`] = marked === n
  return {
    pass: Object.values(checks).every(Boolean),
    checks,
    counts: { patients, distinct_case_ids: caseIds.size, distinct_external_ids: externalIds.size, lab_results: labResults, distinct_lab_results: results.size, ...(changed ? { bench_note: marked } : {}) },
  }
}

// ---- One timed phase ----

async function runPhase(phase: string, db: Db, sandbox: Sandbox, kind: string, domains: string[], total: number, expectBenchNote: boolean) {
  const config = loadConfig({
    HERALD_COMMCARE_URL: sandbox.url, HERALD_COMMCARE_USER: 'herald', HERALD_COMMCARE_API_KEY: 'sandbox',
    HERALD_COMMCARE_ROOT_DOMAIN: 'ny-covid', HERALD_COMMCARE_CONCURRENCY: String(C), HERALD_WORKER_ID: 'bench',
  })
  const client = instrument(commcareClient(config, sandbox.url))
  const engine = casesyncOutEngine(config, log, client)
  const tdb = timedDb(db)
  const pool = (db as unknown as { pool?: pg.Pool }).pool
  const outcomes: Record<string, number> = {}
  const steps: { ms: number; jobs: number; pre: number; post: number }[] = []
  let done = 0
  const stats0 = await sandbox.stats()
  const sandboxCpu0 = sandbox.cpuSeconds()
  meter.reset()
  const sampler = pool
    ? setInterval(() => {
        meter.poolSamples++
        meter.poolWaitingSum += pool.waitingCount
        meter.poolWaitingMax = Math.max(meter.poolWaitingMax, pool.waitingCount)
        if (pool.waitingCount > 0) meter.poolBusySamples++
      }, 10)
    : undefined
  const cpu0 = process.cpuUsage()
  const elu0 = performance.eventLoopUtilization()
  const started = now()
  const ticker = setInterval(() => {
    const s = (now() - started) / 1000
    progress(`${kind} ${phase}: ${done}/${total} cases, ${meter.requests} requests, ${s.toFixed(1)} s, ${Math.round(done / s)} cases/s, ${meter.inflight} in flight`)
  }, 1000)
  try {
    for (;;) {
      if (stop.signal.aborted) throw new Error('interrupted')
      const s0 = now()
      meter.stepFirstStart = meter.stepLastEnd = undefined
      const counts = await engine.step(tdb, stop.signal)
      const s1 = now()
      const jobs = Object.values(counts).reduce((a, b) => a + b, 0)
      if (jobs === 0) break
      steps.push({ ms: s1 - s0, jobs, pre: (meter.stepFirstStart ?? s1) - s0, post: s1 - (meter.stepLastEnd ?? s1) })
      for (const [k, v] of Object.entries(counts)) outcomes[k] = (outcomes[k] ?? 0) + v
      done += jobs
    }
  } finally {
    clearInterval(ticker)
    if (sampler) clearInterval(sampler)
  }
  const seconds = (now() - started) / 1000
  meter.tick() // closes the in-flight integral at the end of the phase
  const elu = performance.eventLoopUtilization(elu0)
  const cpu = process.cpuUsage(cpu0)
  const stats = await sandbox.stats()
  const sandboxCpu = sandbox.cpuSeconds()
  const requests = stats.requests - stats0.requests
  const [{ left }] = await db.query('SELECT count(*)::int AS left FROM case_sync_queue')
  const ideal = C / (LATENCY / 1000)
  const check = await checkSandbox(sandbox, domains, total, expectBenchNote)
  const stepMs = steps.map((s) => s.ms)
  return {
    phase, db: kind, cases: done, concurrency: C, latency_ms: LATENCY, seconds: r3(seconds),
    cases_per_s: r1(done / seconds), requests, requests_per_s: r1(requests / seconds), requests_per_case: r3(requests / Math.max(done, 1)),
    ideal_requests_per_s: r1(ideal), ratio: r3(requests / seconds / ideal), cases_ratio: r3(done / seconds / ideal),
    outcomes, submissions: stats.submissions - stats0.submissions, queue_left: left,
    sandbox_errors: { status429: stats.status429 - stats0.status429, status5xx: stats.status5xx - stats0.status5xx, rejected: stats.rejected - stats0.rejected },
    concurrency_used: { mean_in_flight: r1(meter.area / (seconds * 1000)), max_in_flight: meter.maxInflight },
    request_ms: { mean: r1(mean(meter.durations)), p50: r1(pct(meter.durations, 50)), p99: r1(pct(meter.durations, 99)), max: r1(pct(meter.durations, 100)) },
    steps: {
      count: steps.length, jobs_per_step: r1(done / Math.max(steps.length, 1)),
      ms_mean: r1(mean(stepMs)), ms_p50: r1(pct(stepMs, 50)), ms_max: r1(pct(stepMs, 100)),
      // Step start → its first request (claim, counties, cases), and its last answer → step end (the last jobs' writes, release).
      before_first_request_ms_mean: r1(mean(steps.map((s) => s.pre))), after_last_answer_ms_mean: r1(mean(steps.map((s) => s.post))),
      no_request_in_flight_s: r3(steps.reduce((a, s) => a + s.pre + s.post, 0) / 1000),
      ms_each: stepMs.map(Math.round),
    },
    db_calls: {
      transactions: meter.tx.count, transaction_ms_mean: r1(mean(meter.tx.ms)), transaction_ms_p99: r1(pct(meter.tx.ms, 99)),
      queries: meter.queries.count, query_ms_mean: r1(meter.queries.ms / Math.max(meter.queries.count, 1)),
      ...(pool ? { pool_size: POOL, pool_waiting_mean: r1(meter.poolWaitingSum / Math.max(meter.poolSamples, 1)), pool_waiting_max: meter.poolWaitingMax,
        pool_waiters_share: r3(meter.poolBusySamples / Math.max(meter.poolSamples, 1)) } : {}),
    },
    heap_used_mb: Math.round(process.memoryUsage().heapUsed / 2 ** 20),
    sandbox: args.sandbox, event_loop_utilization: r3(elu.utilization), node_cpu_s: r1((cpu.user + cpu.system) / 1e6),
    ...(sandboxCpu !== undefined && sandboxCpu0 !== undefined ? { sandbox_cpu_s: r1(sandboxCpu - sandboxCpu0) } : {}),
    check,
  }
}

// ---- Main ----

async function main() {
  const kind = (args.db ?? (await defaultDb())) as string
  if (kind !== 'postgres' && kind !== 'pglite') throw new Error('--db must be postgres or pglite')
  const dir = join(tmpdir(), 'herald-bench')
  mkdirSync(dir, { recursive: true })
  const file = await exportFile(dir, N)
  let sandbox: Sandbox | undefined
  const fresh = await freshDb(kind, 'casesync', POOL)
  const db = fresh.db
  try {
    progress(`${kind}: migrating, loading counties, ingesting and linking ${file}`)
    await migrate(db)
    await db.transaction((tx) => saveCounties(tx, COUNTY_LIST))
    const ing = await ingest(db, file)
    const linked = await linkUntilEmpty(db, 4000, log)
    await db.exec('VACUUM ANALYZE')
    const [q] = await db.query(`SELECT (SELECT count(*) FROM case_sync_queue)::int AS queued, (SELECT count(*) FROM index_cases)::int AS cases,
      (SELECT count(DISTINCT person_id) FROM index_cases)::int AS people, (SELECT count(*) FROM lab_results)::int AS lab_results`)
    progress(`${kind}: ${ing.rows} rows ingested, link ${JSON.stringify(linked)}; ${q.queued} index cases in case_sync_queue (${q.cases} cases, ${q.people} people, ${q.lab_results} lab results)`)
    if (q.queued !== N || q.cases !== N || q.people !== N) throw new Error(`expected ${N} cases of ${N} people in case_sync_queue, found ${JSON.stringify(q)}`)
    if (stop.signal.aborted) throw new Error('interrupted')
    const domains = await domainsOf(db)

    sandbox = await startSandbox(args.sandbox!)
    progress(`${kind}: sandbox (${args.sandbox}) at ${sandbox.url}, latency ${LATENCY} ms; phase "new": ${N} cases, concurrency ${C}`)
    const first = await runPhase('new', db, sandbox, kind, domains, N, false)
    progress(`${kind} new: ${first.seconds} s, ${first.cases_per_s} cases/s, ratio ${first.ratio}; no duplicates: ${first.check.pass ? 'pass' : 'FAIL'}`)

    // Every case changed: a property CommCare does not have, and one job per case again.
    await db.transaction(async (tx) => {
      await tx.query(`UPDATE index_cases SET data = data || jsonb_build_object('bench_note', 'changed')`)
      await tx.query(`INSERT INTO case_sync_queue (index_case_id) SELECT id FROM index_cases
        ON CONFLICT (index_case_id) DO UPDATE SET generation = case_sync_queue.generation + 1`)
    })
    await db.exec('VACUUM ANALYZE')
    progress(`${kind}: phase "changed": ${N} cases CommCare holds, concurrency ${C}`)
    const second = await runPhase('changed', db, sandbox, kind, domains, N, true)
    progress(`${kind} changed: ${second.seconds} s, ${second.cases_per_s} cases/s, ratio ${second.ratio}; no duplicates: ${second.check.pass ? 'pass' : 'FAIL'}`)

    const peakRssMb = Math.round(process.resourceUsage().maxRSS / 1024)
    const phases = [first, second]
    if (args.json) {
      console.log(JSON.stringify({ setup: { rows: ing.rows, linked, ...q }, phases, peak_rss_mb: peakRssMb }, null, 2))
    } else {
      for (const p of phases) {
        const { check, ...rest } = p
        console.log(`\n## ${p.phase}\n${JSON.stringify(rest, null, 2)}`)
        console.log(`no duplicates: ${check.pass ? 'PASS' : 'FAIL'} ${JSON.stringify(check.counts)}`)
        for (const [k, ok] of Object.entries(check.checks)) if (!ok) console.log(`  failed: ${k}`)
        console.log(`target ≥ 0.9 of concurrency / latency (requests/s ÷ ${p.ideal_requests_per_s}): ${p.ratio >= 0.9 ? 'met' : 'NOT met'} (${p.ratio})`)
      }
      console.log('\n| phase | db | cases | concurrency | latency ms | seconds | cases/s | requests/s | requests/case | ideal req/s | ratio | cases/s ÷ ideal | no duplicates |')
      console.log('| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |')
      for (const p of phases) {
        console.log(`| ${p.phase} | ${p.db} | ${p.cases.toLocaleString('en-US')} | ${p.concurrency} | ${p.latency_ms} | ${p.seconds.toFixed(1)} | ${Math.round(p.cases_per_s)} | ${Math.round(p.requests_per_s)} | ${p.requests_per_case.toFixed(2)} | ${Math.round(p.ideal_requests_per_s)} | ${p.ratio.toFixed(2)} | ${p.cases_ratio.toFixed(2)} | ${p.check.pass ? 'pass' : 'FAIL'} |`)
      }
      console.log(`\nsandbox: ${args.sandbox === 'inprocess' ? 'in this process (its work shares the event loop)' : 'a process of its own'}; PostgreSQL pool: ${kind === 'postgres' ? POOL : 'n/a'}`)
      console.log(`peak RSS ${peakRssMb} MB (process.resourceUsage().maxRSS${args.sandbox === 'inprocess' ? '; the sandbox included' : ''}${kind === 'pglite' ? '; PGlite included' : ''})`)
    }
    if (!phases.every((p) => p.check.pass)) process.exitCode = 1
  } finally {
    await sandbox?.close().catch((e) => progress(`closing the sandbox: ${e}`))
    await fresh.drop().catch((e) => progress(`dropping the database: ${e}`))
  }
}

await runInterruptible(main, stop, progress, 'the sandbox was closed and the database dropped')
