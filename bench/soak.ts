/**
 * Soak benchmark: the whole pipeline for N minutes in ONE process hosting every engine, as `herald run`
 * hosts them (runEngines over the same ENGINES list), on a fresh PostgreSQL database, against the
 * sandboxes (CommCare, Twilio Lookup, the verification server, Twilio's SMS API), each a process of its
 * own with latency on every answer. Reports, per engine, throughput, each queue's oldest waiting item
 * over time (it must stay bounded), and the process's RSS over time (it must stay flat).
 *
 *   npm run bench:soak [-- --minutes 10 --rows 20000 --seen 0.5 --api-rate 50 --job-rows 50000 --latency 50
 *                         --interval 10 --pool 8 --svg docs/benchmarks/soak.svg --keep --json]
 *
 * Load, all at once:
 *   - an ECLRS export of --rows rows dropped in the inbox every minute (the first at 0:00), each file after
 *     the first repeating --seen of the one before (generateEclrs; people recur across files, so link
 *     also updates cases); generated before the run, cached in the temp folder;
 *   - what follows by itself: link, case sync out to CommCare (and its poll back in), exposure (intake,
 *     phone lookup, code issue);
 *   - --api-rate POST /v2/notifications/sms a second through Herald's HTTP server with a real key (a JWT
 *     signed with it, renewed every 10 s), each a distinct recipient;
 *   - a bulk job of --job-rows rows uploaded through POST /v2/jobs at 0:00;
 *   - sending to the SMS sandbox, whose delivery receipts come back to Herald's receipt webhook after 1 s.
 * Every --interval seconds: per engine the items done since the last sample (the engines' Counters),
 * every queue's waiting / in flight / oldest waiting age (allStats, as `herald queue`), the process's RSS
 * and heap, the event loop's delay, the API's answers. At the end: a table per engine and queue, and an
 * SVG chart (oldest waiting age per queue, RSS) written to --svg.
 *
 * The database: created on DATABASE_URL's server (default postgres@127.0.0.1:5432) and dropped after,
 * unless --keep. Progress goes to stderr; the report and a Markdown table to stdout.
 */
import { copyFile, mkdir, rename } from 'node:fs/promises'
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs'
import { setMaxListeners } from 'node:events'
import { createServer } from 'node:net'
import { loadavg, tmpdir } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { monitorEventLoopDelay, performance } from 'node:perf_hooks'
import { parseArgs } from 'node:util'
import { createSigner } from 'fast-jwt'
import type pg from 'pg'
import pino from 'pino'
import { Pool } from 'undici'
import { commcareClient, fetchCounties } from '../src/casesync/index.ts'
import { ENGINES, engineNames, type Outside } from '../src/cli/run.ts'
import { loadConfig } from '../src/config.ts'
import { migrate } from '../src/db/migrate.ts'
import type { Db } from '../src/db/types.ts'
import { Counters, type Engine } from '../src/engine/engine.ts'
import { allStats } from '../src/engine/queues.ts'
import type { QueueStats } from '../src/engine/queue.ts'
import { runEngines } from '../src/engine/runner.ts'
import { LookupClient, VerificationClient } from '../src/exposure/clients.ts'
import { generateEclrs } from '../src/ingest/generate.ts'
import { createLogger } from '../src/log.ts'
import { messagingKeys, messagingRoutes } from '../src/messaging/index.ts'
import { receiptRoutes, receiptUrls } from '../src/messaging/receipts/routes.ts'
import { registerProviders } from '../src/messaging/send/providers.ts'
import { TwilioSms } from '../src/messaging/send/twilio.ts'
import { createKey, createService, createTemplate } from '../src/messaging/services.ts'
import { startHttpServer } from '../src/http/server.ts'
import { secretKey } from '../src/privacy/keys.ts'
import { spawnSandbox, type SandboxProcess, runInterruptible } from './process.ts'
import { admin, targetUrl } from './targets.ts'
import { PostgresDb } from '../src/db/postgres.ts'

const { values: args } = parseArgs({
  options: {
    minutes: { type: 'string', default: '10' },
    rows: { type: 'string', default: '20000' },
    seen: { type: 'string', default: '0.5' },
    'api-rate': { type: 'string', default: '50' },
    'job-rows': { type: 'string', default: '50000' },
    latency: { type: 'string', default: '50' },
    interval: { type: 'string', default: '10' },
    pool: { type: 'string', default: '8' },
    svg: { type: 'string', default: 'docs/benchmarks/soak.svg' },
    keep: { type: 'boolean', default: false },
    json: { type: 'boolean', default: false },
  },
})

const num = (name: keyof typeof args, min: number, max = Infinity, whole = true) => {
  const v = Number(args[name])
  if (!Number.isFinite(v) || v < min || v > max || (whole && !Number.isInteger(v))) throw new Error(`--${name} must be a ${whole ? 'whole ' : ''}number from ${min} to ${max}`)
  return v
}
const MINUTES = num('minutes', 1, 600)
const ROWS = num('rows', 1, 5_000_000)
const SEEN = num('seen', 0, 0.95, false)
const API_RATE = num('api-rate', 0, 10_000, false)
const JOB_ROWS = num('job-rows', 0, 5_000_000)
const LATENCY = num('latency', 0, 10_000)
const INTERVAL = num('interval', 1, 600)
const POOL = num('pool', 1, 100)
const SECRET = 'bench-secret-key-bench-secret-key-0123456789'
const SID = 'ACbench'
const TOKEN = 'bench'
// People recur across files: new rows draw from this many people, so link updates cases too.
const PEOPLE = ROWS * 5 // five files' worth of people

const progress = (msg: string) => process.stderr.write(`${msg}\n`)
const stop = new AbortController()
const r1 = (x: number) => Math.round(x * 10) / 10
const mb = (bytes: number) => Math.round(bytes / 2 ** 20)
const fmt = (n: number) => Math.round(n).toLocaleString('en-US')

// ---- The exports: file k repeats SEEN of file k-1; cached ----

async function exportFiles(dir: string): Promise<string[]> {
  const files: string[] = []
  for (let k = 0; k < MINUTES; k++) {
    const file = join(dir, `soak-${ROWS}-${SEEN}-${PEOPLE}-${k}.txt`)
    if (!existsSync(file)) {
      const t = performance.now()
      await generateEclrs({
        rows: ROWS, version: 3, out: `${file}.part`, seed: 1000 + k,
        repeatFrom: k > 0 ? files[k - 1] : undefined, repeatFraction: SEEN,
        people: { ranges: [{ from: 0, to: PEOPLE, weight: 1 }], otherKeyFraction: 0.05, otherCountyFraction: 0.1 },
      })
      renameSync(`${file}.part`, file)
      progress(`generated ${file} (${r1((performance.now() - t) / 1000)} s)`)
    }
    files.push(file)
  }
  return files
}

/** The bulk job's CSV: distinct numbers 212-(200…)-(0000…6999), clear of the SMS sandbox's failure patterns (7xxx). */
function jobCsv(n: number): string {
  const lines = ['phone number,name,ref']
  for (let i = 0; i < n; i++) lines.push(`+1 212 ${200 + Math.floor(i / 7000)} ${String(i % 7000).padStart(4, '0')},Person ${i},J${i}`)
  return lines.join('\n')
}

async function freePort(): Promise<number> {
  const s = createServer()
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r))
  const port = (s.address() as { port: number }).port
  await new Promise((r) => s.close(r))
  return port
}

// ---- API traffic: a steady rate of POST /v2/notifications/sms ----

class ApiLoad {
  sent = 0
  ok = 0
  other = 0
  errors = 0
  skipped = 0 // not sent: too many requests already outstanding
  outstanding = 0
  window: number[] = []
  statuses: Record<string, number> = {}
  private timer?: NodeJS.Timeout
  private credit = 0
  private n = 0
  private token = ''
  private tokenAt = 0
  private readonly pool: Pool

  constructor(url: string, private readonly sign: () => string, private readonly templateId: string) {
    this.pool = new Pool(url, { connections: 32, pipelining: 1 })
  }

  private jwt() {
    if (Date.now() - this.tokenAt > 10_000) {
      this.token = this.sign()
      this.tokenAt = Date.now()
    }
    return this.token
  }

  start(rate: number) {
    if (rate <= 0) return
    this.timer = setInterval(() => {
      this.credit += rate / 10
      while (this.credit >= 1) {
        this.credit -= 1
        if (this.outstanding >= 500) this.skipped++
        else void this.one()
      }
    }, 100)
  }

  private async one() {
    const i = this.n++
    // Distinct recipients 646-(200…999)-(0000…6999): clear of the sandbox's failure patterns.
    const phone = `+1 646 ${200 + (Math.floor(i / 7000) % 800)} ${String(i % 7000).padStart(4, '0')}`
    const body = JSON.stringify({ template_id: this.templateId, phone_number: phone, personalisation: { name: 'Ada', ref: `A${i}` }, reference: 'soak' })
    this.sent++
    this.outstanding++
    const t = performance.now()
    try {
      const res = await this.pool.request({ path: '/v2/notifications/sms', method: 'POST', body,
        headers: { authorization: `Bearer ${this.jwt()}`, 'content-type': 'application/json' } })
      await res.body.dump()
      this.statuses[res.statusCode] = (this.statuses[res.statusCode] ?? 0) + 1
      if (res.statusCode === 201) this.ok++
      else this.other++
    } catch {
      this.errors++
    } finally {
      this.outstanding--
      this.window.push(performance.now() - t)
    }
  }

  /** The answers' times since the last call (ms): p50, p99, max. */
  take() {
    const w = Float64Array.from(this.window).sort()
    this.window = []
    const at = (p: number) => (w.length ? r1(w[Math.min(w.length - 1, Math.floor(p * w.length))]) : null)
    return { answers: w.length, p50_ms: at(0.5), p99_ms: at(0.99), max_ms: w.length ? r1(w[w.length - 1]) : null }
  }

  async close() {
    clearInterval(this.timer)
    for (let i = 0; i < 100 && this.outstanding > 0; i++) await new Promise((r) => setTimeout(r, 100))
    await this.pool.close()
  }
}

// ---- Samples ----

interface Sample {
  t: number // seconds since the start of the load
  done: Record<string, number> // per engine, items since the last sample (deferred and released not counted)
  queues: Record<string, { waiting: number; inFlight: number; retrying: number; failed: number; oldest: number | null }>
  rss_mb: number
  heap_mb: number
  loop_delay_p99_ms: number
  /** The process's CPU over the interval, in cores (1 = one core busy all along). */
  cpu_cores: number
  /** The machine's 1-minute load average. */
  load1: number
  /** The database pool (8 as `herald run` opens): mean callers waiting for a connection, share of the time any waited. */
  pool_waiting_mean: number
  pool_waited_share: number
  /** This database's server connections at the sample: running a statement, idle inside a transaction. */
  pg_active: number
  pg_idle_in_tx: number
  /** Connections the pool had lent out at the sample (the rest of its connections idle in it). */
  pool_lent: number
  api: ReturnType<ApiLoad['take']> & { ok: number; other: number }
  ingested_rows: number
  db_mb: number
}

const NOT_PROGRESS = new Set(['deferred', 'released'])
const itemsOf = (c: Counters) => Object.fromEntries(Object.entries(c.snapshot()).map(([e, m]) =>
  [e, Object.entries(m).filter(([o]) => !NOT_PROGRESS.has(o)).reduce((s, [, n]) => s + n, 0)]))

// ---- The chart: SVG polylines, no dependency ----

const PALETTE = ['#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd', '#8c564b', '#e377c2', '#7f7f7f', '#bcbd22', '#17becf', '#003f5c', '#a05195', '#665191']
const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;')

function niceMax(v: number): number {
  if (v <= 0) return 1
  const p = 10 ** Math.floor(Math.log10(v))
  for (const m of [1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10]) if (m * p >= v) return m * p
  return 10 * p
}

function panel(o: { x: number; y: number; w: number; h: number; title: string; yLabel: string; tMax: number; series: { name: string; color: string; points: [number, number | null][] }[] }): string {
  const yMax = niceMax(Math.max(0, ...o.series.flatMap((s) => s.points.map(([, v]) => v ?? 0))))
  const X = (t: number) => o.x + (t / o.tMax) * o.w
  const Y = (v: number) => o.y + o.h - (v / yMax) * o.h
  const out: string[] = []
  out.push(`<text x="${o.x}" y="${o.y - 10}" font-size="13" font-weight="bold">${esc(o.title)}</text>`)
  out.push(`<rect x="${o.x}" y="${o.y}" width="${o.w}" height="${o.h}" fill="none" stroke="#999"/>`)
  for (let i = 0; i <= 5; i++) {
    const v = (yMax * i) / 5
    out.push(`<line x1="${o.x}" x2="${o.x + o.w}" y1="${Y(v)}" y2="${Y(v)}" stroke="#eee"/>`)
    out.push(`<text x="${o.x - 6}" y="${Y(v) + 4}" font-size="11" text-anchor="end">${r1(v)}</text>`)
  }
  const minutes = o.tMax / 60
  const step = minutes <= 12 ? 1 : Math.ceil(minutes / 12)
  for (let m = 0; m <= minutes + 1e-9; m += step) {
    out.push(`<line x1="${X(m * 60)}" x2="${X(m * 60)}" y1="${o.y}" y2="${o.y + o.h}" stroke="#f3f3f3"/>`)
    out.push(`<text x="${X(m * 60)}" y="${o.y + o.h + 16}" font-size="11" text-anchor="middle">${m}</text>`)
  }
  out.push(`<text x="${o.x + o.w / 2}" y="${o.y + o.h + 32}" font-size="11" text-anchor="middle">minutes since the start of the load</text>`)
  out.push(`<text x="${o.x - 44}" y="${o.y + o.h / 2}" font-size="11" text-anchor="middle" transform="rotate(-90 ${o.x - 44} ${o.y + o.h / 2})">${esc(o.yLabel)}</text>`)
  o.series.forEach((s, i) => {
    // A null (nothing waiting) is drawn as 0: the queue was empty.
    const pts = s.points.map(([t, v]) => `${X(t).toFixed(1)},${Y(v ?? 0).toFixed(1)}`).join(' ')
    out.push(`<polyline fill="none" stroke="${s.color}" stroke-width="1.6" points="${pts}"/>`)
    const lx = o.x + o.w + 14
    const ly = o.y + 10 + i * 16
    out.push(`<line x1="${lx}" x2="${lx + 18}" y1="${ly - 4}" y2="${ly - 4}" stroke="${s.color}" stroke-width="3"/>`)
    out.push(`<text x="${lx + 24}" y="${ly}" font-size="11">${esc(s.name)}</text>`)
  })
  return out.join('\n')
}

function chart(samples: Sample[], title: string): string {
  const tMax = Math.max(60, samples.at(-1)?.t ?? 60)
  const names = [...new Set(samples.flatMap((s) => Object.keys(s.queues)))]
  const waited = names.filter((n) => samples.some((s) => s.queues[n]?.oldest !== null && s.queues[n]?.oldest !== undefined))
  const W = 1000
  const body = [
    panel({ x: 70, y: 60, w: 720, h: 280, title: 'Oldest waiting item per queue (seconds; 0: nothing waiting)', yLabel: 'seconds', tMax,
      series: waited.map((n, i) => ({ name: n, color: PALETTE[i % PALETTE.length], points: samples.map((s) => [s.t, s.queues[n]?.oldest ?? null] as [number, number | null]) })) }),
    panel({ x: 70, y: 420, w: 720, h: 220, title: 'Herald process memory (MB)', yLabel: 'MB', tMax,
      series: [
        { name: 'RSS', color: PALETTE[3], points: samples.map((s) => [s.t, s.rss_mb]) },
        { name: 'V8 heap used', color: PALETTE[0], points: samples.map((s) => [s.t, s.heap_mb]) },
      ] }),
  ]
  return `<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="700" viewBox="0 0 ${W} 700" font-family="sans-serif">
<rect width="100%" height="100%" fill="white"/>
${title.split('\n').map((line, i) => `<text x="70" y="${18 + i * 15}" font-size="${i === 0 ? 14 : 12}"${i === 0 ? ' font-weight="bold"' : ''}>${esc(line)}</text>`).join('\n')}
${body.join('\n')}
</svg>
`
}

/** The log's lines (warn and above) by level and message: what went wrong, without reading it all. */
function logLevels(file: string): Record<string, number> {
  const out: Record<string, number> = {}
  if (!existsSync(file)) return out
  for (const line of readFileSync(file, 'utf8').split('\n')) {
    if (!line) continue
    try {
      const j = JSON.parse(line) as { level: number; msg?: string }
      const k = `${j.level >= 50 ? 'error' : 'warn'}: ${j.msg ?? ''}`
      out[k] = (out[k] ?? 0) + 1
    } catch { /* a partial line */ }
  }
  return out
}

// ---- Main ----

async function main() {
  const dir = join(tmpdir(), 'herald-bench')
  mkdirSync(dir, { recursive: true })
  const files = await exportFiles(dir)
  const work = mkdtempSync(join(tmpdir(), 'herald-bench-soak-'))
  const inbox = join(work, 'inbox')
  const staging = join(work, 'staging')
  await mkdir(inbox, { recursive: true })
  await mkdir(staging, { recursive: true })
  const logFile = join(work, 'herald.log')

  const sandboxes: SandboxProcess[] = []
  const lat = ['--latency', String(LATENCY)]
  const name = `herald_bench_soak_${process.pid}`
  let db: Db | undefined
  let created = false
  const closers: (() => Promise<unknown>)[] = []
  try {
    const commcare = await spawnSandbox('commcare', [...lat, '--seed', '1', '--user', 'herald', '--api-key', 'sandbox', '--root-domain', 'ny-covid'])
    sandboxes.push(commcare)
    const lookup = await spawnSandbox('lookup', [...lat, '--account-sid', SID, '--auth-token', TOKEN])
    sandboxes.push(lookup)
    const enx = await spawnSandbox('verification', [...lat, '--api-key', 'bench', '--seed', '1'])
    sandboxes.push(enx)
    const sms = await spawnSandbox('sms', [...lat, '--provider', 'twilio', '--account-sid', SID, '--auth-token', TOKEN, '--callback-delay', '1000', '--seed', '1'])
    sandboxes.push(sms)

    await admin(`CREATE DATABASE ${name}`)
    created = true
    const port = await freePort()
    const publicUrl = `http://127.0.0.1:${port}`
    const config = loadConfig({
      DATABASE_URL: targetUrl(name), HERALD_SECRET_KEY: SECRET, HERALD_DATA_DIR: work, HERALD_INBOX: inbox, HERALD_WORKER_ID: 'soak',
      HERALD_HTTP_PORT: String(port), HERALD_PUBLIC_URL: publicUrl, HERALD_LOG_LEVEL: 'warn',
      HERALD_COMMCARE_URL: commcare.url, HERALD_COMMCARE_USER: 'herald', HERALD_COMMCARE_API_KEY: 'sandbox', HERALD_COMMCARE_ROOT_DOMAIN: 'ny-covid',
      HERALD_ENX_URL: enx.url, HERALD_ENX_API_KEY: 'bench', HERALD_LOOKUP_URL: lookup.url,
      HERALD_TWILIO_ACCOUNT_SID: SID, HERALD_TWILIO_AUTH_TOKEN: TOKEN, HERALD_SMS_PROVIDERS: 'twilio', HERALD_TWILIO_URL: sms.url,
    })
    db = new PostgresDb('postgres', { connectionString: config.databaseUrl!, max: POOL })
    const log = createLogger('warn', pino.destination({ dest: logFile, sync: false }))
    await migrate(db)

    // The outside systems, as startOutside builds them for real services.
    const timeoutMs = config.commcare.timeoutMs
    const outside: Outside = {
      commcare: commcareClient(config, commcare.url),
      exposure: {
        verification: new VerificationClient({ url: enx.url, apiKey: 'bench', timeoutMs }),
        lookup: new LookupClient({ url: lookup.url, accountSid: SID, authToken: TOKEN, timeoutMs }),
      },
      sms: [new TwilioSms({ url: sms.url, accountSid: SID, authToken: TOKEN, timeoutMs, callbackUrl: receiptUrls(publicUrl, secretKey(config)).twilio })],
    }
    closers.push(async () => {
      await outside.commcare?.close()
      await outside.exposure?.verification.close()
      await outside.exposure?.lookup?.close()
      for (const p of outside.sms) await p.close()
    })
    await registerProviders(db, ['twilio'])
    const counties = await fetchCounties(db, outside.commcare!)

    // A service, a live key and a template, as `herald service create` / `key create` / `template create` make them.
    const { secrets } = messagingKeys(config)
    const service = await createService(db, { name: 'Soak', smsSender: 'SOAK', rateLimit: 1_000_000_000, messageLimit: 1_000_000_000 })
    const { key } = await createKey(db, secrets, service.id, 'live', 'normal')
    const template = await createTemplate(db, service.id, 'Result', 'Hello ((name)), your test result is ready. Reference ((ref)).', 'bench')
    const signer = createSigner({ key: key.slice(-36), algorithm: 'HS256' })
    const sign = () => signer({ iss: service.id }) as string

    // Every engine `herald run` hosts, built by the same list.
    const built = engineNames(undefined).map((n) => [n, ENGINES[n](config, log, outside)] as const)
    const engines = built.map(([, e]) => e).filter((e): e is Engine => typeof e !== 'string')
    const off = built.filter(([, e]) => typeof e === 'string').map(([n, why]) => `${n} (${why})`)
    const http = await startHttpServer(config.httpHost, port, [
      messagingRoutes(config, db, log),
      receiptRoutes({ db, log, publicUrl, secret: secretKey(config), twilioAuthToken: TOKEN }),
    ], log)
    closers.unshift(() => http.close())
    await db.exec('VACUUM ANALYZE')

    progress(`PostgreSQL ${name} (pool ${POOL}); ${counties} counties; engines: ${engines.map((e) => e.name).join(', ')}${off.length ? `; off: ${off.join(', ')}` : ''}`)
    progress(`load for ${MINUTES} min: an export of ${fmt(ROWS)} rows a minute (${SEEN * 100}% seen before, after the first), ` +
      `${API_RATE} API texts/s, a bulk job of ${fmt(JOB_ROWS)} rows at 0:00; sandbox latency ${LATENCY} ms; log (warn and above): ${logFile}`)

    // ---- Run ----
    const counters = new Counters()
    const run = new AbortController()
    const onStop = () => run.abort()
    stop.signal.addEventListener('abort', onStop)
    const loop = monitorEventLoopDelay({ resolution: 20 })
    loop.enable()
    setMaxListeners(100, run.signal) // every engine's idle sleep listens to it
    const pgPool = (db as unknown as { pool: pg.Pool }).pool
    let poolTicks = 0
    let poolWaitingSum = 0
    let poolWaitedTicks = 0
    const poolTimer = setInterval(() => {
      poolTicks++
      poolWaitingSum += pgPool.waitingCount
      if (pgPool.waitingCount > 0) poolWaitedTicks++
    }, 50)
    let cpuLast = process.cpuUsage()
    let cpuLastAt = performance.now()
    const runner = runEngines(db, engines, { pollIntervalMs: config.pollIntervalMs, signal: run.signal, counters, log })

    const api = new ApiLoad(publicUrl, sign, template.id)
    const t0 = performance.now()
    const elapsed = () => (performance.now() - t0) / 1000
    const samples: Sample[] = []
    const drops: { file: number; at_s: number }[] = []
    let last = itemsOf(counters)
    const cpu0 = process.cpuUsage()

    const sample = async () => {
      const t = elapsed()
      const now = itemsOf(counters)
      const done: Record<string, number> = {}
      for (const e of engines) done[e.name] = (now[e.name] ?? 0) - (last[e.name] ?? 0)
      last = now
      const stats: QueueStats[] = await allStats(db!)
      const [x] = await db!.query(`SELECT coalesce(sum(total_rows), 0)::bigint AS rows, pg_database_size(current_database()) AS size,
        (SELECT count(*) FILTER (WHERE state = 'active') - 1 FROM pg_stat_activity WHERE datname = current_database())::int AS active,
        (SELECT count(*) FILTER (WHERE state LIKE 'idle in transaction%') FROM pg_stat_activity WHERE datname = current_database())::int AS idle_in_tx
        FROM files`)
      const mem = process.memoryUsage()
      const cpuNow = process.cpuUsage()
      const cores = ((cpuNow.user - cpuLast.user + cpuNow.system - cpuLast.system) / 1000) / Math.max(1, performance.now() - cpuLastAt)
      cpuLast = cpuNow
      cpuLastAt = performance.now()
      const s: Sample = {
        t: r1(t), done,
        queues: Object.fromEntries(stats.map((q) => [q.engine, { waiting: q.waiting, inFlight: q.inFlight, retrying: q.retrying, failed: q.failed,
          oldest: q.oldestWaitingSeconds === null ? null : r1(q.oldestWaitingSeconds) }])),
        rss_mb: mb(mem.rss), heap_mb: mb(mem.heapUsed), loop_delay_p99_ms: r1(loop.percentile(99) / 1e6),
        pg_active: x.active, pg_idle_in_tx: x.idle_in_tx, pool_lent: pgPool.totalCount - pgPool.idleCount,
        cpu_cores: Math.round(cores * 100) / 100, load1: Math.round(loadavg()[0] * 100) / 100,
        pool_waiting_mean: r1(poolWaitingSum / Math.max(1, poolTicks)), pool_waited_share: Math.round((poolWaitedTicks / Math.max(1, poolTicks)) * 100) / 100,
        api: { ...api.take(), ok: api.ok, other: api.other + api.errors }, ingested_rows: Number(x.rows), db_mb: mb(Number(x.size)),
      }
      loop.reset()
      poolTicks = poolWaitingSum = poolWaitedTicks = 0
      samples.push(s)
      const busy = Object.entries(s.queues).filter(([, q]) => q.waiting + q.inFlight > 0)
        .map(([n, q]) => `${n} ${q.waiting}+${q.inFlight}${q.oldest !== null ? ` (${Math.round(q.oldest)} s)` : ''}`)
      progress(`${(t / 60).toFixed(1)} min: RSS ${s.rss_mb} MB, heap ${s.heap_mb} MB, loop p99 ${s.loop_delay_p99_ms} ms, CPU ${s.cpu_cores} cores, ` +
        `load ${s.load1}, pool waiting ${s.pool_waiting_mean} (${Math.round(s.pool_waited_share * 100)}% of the time), ${s.pool_lent} lent, server: ${s.pg_active} active, ` +
        `${s.pg_idle_in_tx} idle in tx; done ` +
        Object.entries(done).filter(([, n]) => n > 0).map(([e, n]) => `${e} ${n}`).join(', ') +
        `; API ${s.api.answers} answers p99 ${s.api.p99_ms} ms; waiting+in flight: ${busy.join(', ') || 'none'}`)
    }

    const drop = async (k: number) => {
      const staged = join(staging, `eclrs-soak-${k}.txt`)
      await copyFile(files[k], staged)
      await rename(staged, join(inbox, `eclrs-soak-${k}.txt`)) // whole, at once, as a finished upload
      drops.push({ file: k, at_s: r1(elapsed()) })
    }

    await sample() // the baseline, at 0:00
    await drop(0)
    const jobUpload = (async () => {
      if (JOB_ROWS === 0) return undefined
      const t = performance.now()
      const pool = new Pool(publicUrl)
      try {
        const res = await pool.request({ path: '/v2/jobs', method: 'POST', headers: { authorization: `Bearer ${sign()}`, 'content-type': 'application/json' },
          body: JSON.stringify({ template_id: template.id, csv: jobCsv(JOB_ROWS), filename: 'soak.csv' }) })
        const text = await res.body.text()
        if (res.statusCode !== 201) throw new Error(`bulk job upload: HTTP ${res.statusCode} ${text.slice(0, 300)}`)
        return { status: res.statusCode, seconds: r1((performance.now() - t) / 1000) }
      } finally {
        await pool.close()
      }
    })()
    api.start(API_RATE)
    const timers: NodeJS.Timeout[] = []
    for (let k = 1; k < MINUTES; k++) timers.push(setTimeout(() => void drop(k).catch((e) => progress(`drop ${k}: ${e}`)), k * 60_000))
    const sampler = setInterval(() => void sample().catch((e) => progress(`sample: ${e}`)), INTERVAL * 1000)
    const job = await jobUpload
    progress(`bulk job uploaded: ${JSON.stringify(job)}`)
    await new Promise<void>((resolve) => {
      const end = setTimeout(resolve, MINUTES * 60_000 - (performance.now() - t0))
      stop.signal.addEventListener('abort', () => { clearTimeout(end); resolve() })
    })
    clearInterval(sampler)
    clearInterval(poolTimer)
    for (const t of timers) clearTimeout(t)
    if (samples.at(-1)!.t < MINUTES * 60 - 1) await sample() // the last, at the end
    await api.close()
    const seconds = elapsed()
    const cpu = process.cpuUsage(cpu0)
    run.abort()
    const failures = await runner
    stop.signal.removeEventListener('abort', onStop)
    loop.disable()
    if (stop.signal.aborted) throw new Error('interrupted')

    // ---- Report ----
    const snapshot = counters.snapshot()
    const end = samples.at(-1)!
    const half = seconds / 2
    // Least squares slope, per minute (t in seconds).
    const slope = (pts: { t: number; v: number }[]) => {
      if (pts.length < 2) return 0
      const mt = pts.reduce((a, p) => a + p.t, 0) / pts.length
      const mv = pts.reduce((a, p) => a + p.v, 0) / pts.length
      const d = pts.reduce((a, p) => a + (p.t - mt) ** 2, 0)
      return d === 0 ? 0 : (pts.reduce((a, p) => a + (p.t - mt) * (p.v - mv), 0) / d) * 60
    }
    const perEngine = engines.map((e) => {
      const total = samples.reduce((s, x) => s + (x.done[e.name] ?? 0), 0)
      const q = end.queues[e.name]
      const ages = samples.map((s) => s.queues[e.name]?.oldest ?? 0)
      const firstHalf = samples.filter((s) => s.t <= half).map((s) => s.queues[e.name]?.oldest ?? 0)
      const secondHalf = samples.filter((s) => s.t > half).map((s) => s.queues[e.name]?.oldest ?? 0)
      const max1 = Math.max(0, ...firstHalf)
      const max2 = Math.max(0, ...secondHalf)
      // Growing: the second half's worst wait well above the first half's, and still waiting at the end;
      // or the age rising all along (least squares over the run above 10 s a minute) and over a minute at the end.
      const trend = slope(samples.map((s) => ({ t: s.t, v: s.queues[e.name]?.oldest ?? 0 })))
      const growing = (max2 > 1.5 * max1 + 30 && (q?.oldest ?? 0) > 0.5 * max2) || (trend > 10 && (q?.oldest ?? 0) > 60)
      return {
        engine: e.name, items: total, items_per_s: r1(total / seconds), outcomes: snapshot[e.name] ?? {},
        oldest_waiting_s: { max: r1(Math.max(0, ...ages)), max_first_half: r1(max1), max_second_half: r1(max2), last: q?.oldest ?? null },
        waiting_at_end: q?.waiting ?? 0, in_flight_at_end: q?.inFlight ?? 0, failed_at_end: q?.failed ?? 0,
        oldest_trend_s_per_min: r1(trend), verdict: growing ? 'GROWING' : 'bounded',
      }
    })
    const rss = samples.map((s) => s.rss_mb)
    const heap = samples.map((s) => s.heap_mb)
    const rssFirstHalfMax = Math.max(...samples.filter((s) => s.t <= half).map((s) => s.rss_mb))
    const rssSecondHalf = samples.filter((s) => s.t > half)
    const rssSlope = r1(slope(rssSecondHalf.map((s) => ({ t: s.t, v: s.rss_mb }))))
    const heapSlope = r1(slope(rssSecondHalf.map((s) => ({ t: s.t, v: s.heap_mb }))))
    const memory = {
      rss_mb: { first: rss[0], after_1_min: samples.find((s) => s.t >= 60)?.rss_mb ?? null, max: Math.max(...rss), last: rss.at(-1)!, max_first_half: rssFirstHalfMax,
        slope_second_half_mb_per_min: rssSlope },
      heap_mb: { first: heap[0], max: Math.max(...heap), last: heap.at(-1)!, slope_second_half_mb_per_min: heapSlope },
      verdict: rss.at(-1)! <= rssFirstHalfMax * 1.1 && rssSlope < 5 ? 'flat' : 'GROWING',
    }
    const [tot] = await db.query(`SELECT (SELECT count(*) FROM files)::int AS files, (SELECT coalesce(sum(total_rows), 0) FROM files)::int AS rows,
      (SELECT coalesce(sum(new_rows), 0) FROM files)::int AS new_rows, (SELECT count(*) FROM people)::int AS people,
      (SELECT count(*) FROM index_cases)::int AS cases, (SELECT count(*) FROM lab_results)::int AS lab_results,
      (SELECT count(*) FROM notifications)::int AS notifications, (SELECT count(*) FROM notifications WHERE status <> 'created')::int AS handed,
      (SELECT count(*) FROM exposure_notices WHERE state = 'issued')::int AS codes_issued`)
    const smsStats = await sms.get<{ accepted: number }>('/sandbox/stats')
    const ccStats = await commcare.get<{ requests: number; submissions: number }>('/sandbox/stats')
    const sandboxCpu = Object.fromEntries(['commcare', 'lookup', 'verification', 'sms'].map((n, i) => [n, sandboxes[i].cpuSeconds()]))
    const result = {
      command: `npm run bench:soak -- --minutes ${MINUTES}`, minutes: MINUTES, seconds: r1(seconds), rows_per_file: ROWS, seen_share: SEEN, files_dropped: drops,
      api_rate: API_RATE, job_rows: JOB_ROWS, latency_ms: LATENCY, pool: POOL, engines_off: off, bulk_job_upload: job,
      api: { sent: api.sent, created_201: api.ok, other: api.other, errors: api.errors, skipped: api.skipped, statuses: api.statuses,
        p99_ms_worst_window: Math.max(0, ...samples.map((s) => s.api.p99_ms ?? 0)) },
      totals: tot, sms_sandbox_accepted: smsStats.accepted, commcare_sandbox: { requests: ccStats.requests, submissions: ccStats.submissions },
      herald_cpu_s: r1((cpu.user + cpu.system) / 1e6), sandbox_cpu_s: sandboxCpu, peak_rss_mb: mb(process.resourceUsage().maxRSS * 1024),
      failures: Object.fromEntries(failures), log: logLevels(logFile), engines: perEngine, memory, samples,
    }
    const svgPath = resolve(args.svg!)
    mkdirSync(dirname(svgPath), { recursive: true })
    writeFileSync(svgPath, chart(samples, `Herald soak (npm run bench:soak -- --minutes ${MINUTES}): PostgreSQL, every engine in one process, pool ${POOL}\n` +
      `a ${fmt(ROWS)}-row export a minute, ${API_RATE} API texts/s, a ${fmt(JOB_ROWS)}-row bulk job at 0:00, sandboxes at ${LATENCY} ms latency`))
    progress(`chart: ${svgPath}`)

    if (args.json) console.log(JSON.stringify(result, null, 2))
    else {
      const { samples: _s, engines: _e, ...rest } = result
      console.log(JSON.stringify(rest, null, 2))
      console.log('\n| engine | items | items/s | outcomes | oldest waiting s: max (1st half / 2nd half) | last | waiting at end | verdict |')
      console.log('| --- | --- | --- | --- | --- | --- | --- | --- |')
      for (const e of perEngine) {
        const outcomes = Object.entries(e.outcomes).map(([k, n]) => `${k} ${fmt(n)}`).join(', ') || '–'
        const a = e.oldest_waiting_s
        console.log(`| ${e.engine} | ${fmt(e.items)} | ${e.items_per_s} | ${outcomes} | ${a.max} (${a.max_first_half} / ${a.max_second_half}) | ${a.last ?? '–'} | ${fmt(e.waiting_at_end)} | ${e.verdict} |`)
      }
      const m = memory
      console.log(`\n| memory | first | after 1 min | max | last | slope, 2nd half | verdict |`)
      console.log('| --- | --- | --- | --- | --- | --- | --- |')
      console.log(`| RSS MB | ${m.rss_mb.first} | ${m.rss_mb.after_1_min ?? '–'} | ${m.rss_mb.max} | ${m.rss_mb.last} | ${m.rss_mb.slope_second_half_mb_per_min} MB/min | ${m.verdict} |`)
      console.log(`| V8 heap used MB | ${m.heap_mb.first} | – | ${m.heap_mb.max} | ${m.heap_mb.last} | ${m.heap_mb.slope_second_half_mb_per_min} MB/min | |`)
      console.log('\nsamples (t s: RSS MB, oldest waiting s per queue that had any):')
      for (const s of samples) {
        console.log(`${s.t}: ${s.rss_mb} MB; ` + Object.entries(s.queues).filter(([, q]) => q.oldest !== null || q.inFlight > 0)
          .map(([n, q]) => `${n} ${q.oldest ?? 0} s (${q.waiting} waiting, ${q.inFlight} in flight)`).join(', '))
      }
    }
    writeFileSync(join(dir, `soak-${process.pid}.json`), JSON.stringify(result, null, 2))
    await new Promise((r) => setTimeout(r, 500)) // the log's asynchronous writes
    if (existsSync(logFile)) copyFileSync(logFile, join(dir, `soak-${process.pid}.log`))
    progress(`full report (samples included): ${join(dir, `soak-${process.pid}.json`)}`)
  } finally {
    for (const c of closers) await c().catch((e) => progress(`closing: ${e}`))
    await db?.close().catch(() => {})
    for (const s of sandboxes) await s.close().catch((e) => progress(`closing a sandbox: ${e}`))
    if (created && !args.keep) await admin(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`).catch((e) => progress(`dropping the database: ${e}`))
    else if (created) progress(`kept the database ${name} (--keep): drop it with DROP DATABASE ${name}`)
    if (!args.keep) rmSync(work, { recursive: true, force: true })
  }
}

await runInterruptible(main, stop, progress, 'the sandboxes were closed and the database dropped')
