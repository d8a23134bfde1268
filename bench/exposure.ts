/**
 * Exposure benchmark: N eligible people, each with a new positive result and a mobile number of
 * their own, through the three exposure engines (intake, phone check, issue) against the Twilio
 * Lookup and verification server sandboxes, each a process of its own, at a set latency.
 *
 *   npm run bench:exposure [-- --people 100000 --latency 50 --quota 6000 --minutes 4 --phases unlimited,quota
 *                              --db postgres|pglite --pool 8 --lookup-concurrency 128 --issue-concurrency 16 --json]
 *
 * Phase "unlimited": no quota. Codes issued per second, from the first mark taken to the last code
 * recorded (the lookups included). Target ≥ 1,000/s.
 * Phase "quota": the verification server allows Q codes a minute; the engines run for M minutes of
 * real time (the pacer reads the database's clock, which a benchmark cannot speed up). Target: codes
 * issued in the whole windows ≥ 0.95 of Q per window, and at most one HTTP 429 in any window.
 * Both check the sandbox's ledger: no phone texted twice, and every code texted recorded issued.
 *
 * Setup, not timed: a fresh database (PostgreSQL: created on DATABASE_URL's server and dropped after;
 * PGlite: a folder under the system temp folder), N people, cases and results written by SQL (ingest
 * and link have benchmarks of their own), and N marks in exposure_queue, as link leaves them. Phones
 * are 212-2XX-0000…4999: mobile in the lookup sandbox's ranges. Each phase starts from fresh marks, an
 * empty lookup cache and a new verification sandbox (a used uuid would answer 409).
 * Progress goes to stderr; the summary and a Markdown row per phase to stdout.
 */
import { performance } from 'node:perf_hooks'
import { parseArgs } from 'node:util'
import { loadConfig } from '../src/config.ts'
import { migrate } from '../src/db/migrate.ts'
import type { Db } from '../src/db/types.ts'
import { Counters } from '../src/engine/engine.ts'
import { runEngines } from '../src/engine/runner.ts'
import { LookupClient, VerificationClient } from '../src/exposure/clients.ts'
import { exposureEngines } from '../src/exposure/index.ts'
import { createLogger } from '../src/log.ts'
import type { LedgerEntry } from '../src/sandbox/verification/issue.ts'
import type { VerificationSandbox } from '../src/sandbox/verification/server.ts'
import { defaultDb, spawnSandbox, type SandboxProcess, runInterruptible } from './process.ts'
import { freshDb } from './targets.ts'

const { values: args } = parseArgs({
  options: {
    people: { type: 'string', default: '100000' },
    latency: { type: 'string', default: '50' },
    quota: { type: 'string', default: '6000' },
    minutes: { type: 'string', default: '4' },
    phases: { type: 'string', default: 'unlimited,quota' },
    db: { type: 'string' },
    pool: { type: 'string', default: '8' },
    'lookup-concurrency': { type: 'string', default: '128' },
    'issue-concurrency': { type: 'string', default: '16' },
    json: { type: 'boolean', default: false },
  },
})

const whole = (name: string, min: number) => {
  const v = Number(args[name as keyof typeof args])
  if (!Number.isInteger(v) || v < min) throw new Error(`--${name} must be a whole number ≥ ${min}`)
  return v
}
const N = whole('people', 1)
const LATENCY = whole('latency', 0)
const QUOTA = whole('quota', 1)
const MINUTES = whole('minutes', 3) // at least two whole windows
const POOL = whole('pool', 1)
const LOOKUP_C = whole('lookup-concurrency', 1)
const ISSUE_C = whole('issue-concurrency', 1)
const PHASES = args.phases!.split(',')
for (const p of PHASES) if (p !== 'unlimited' && p !== 'quota') throw new Error('--phases takes unlimited and/or quota')
if (N > 4_000_000) throw new Error('--people: at most 4,000,000 (the mobile numbers of exchanges 200–999)')

const SECRET = 'bench-secret-key-bench-secret-key-0123456789'
const WINDOW_MS = 60_000
const log = createLogger('silent')
const progress = (msg: string) => process.stderr.write(`${msg}\n`)
const stop = new AbortController()
const r1 = (x: number) => Math.round(x * 10) / 10
const r3 = (x: number) => Math.round(x * 1000) / 1000

/** N people, one index case and one positive result each; person i has the mobile 212-(200 + i/5000)-(i%5000). */
async function seedPeople(db: Db, n: number) {
  await db.query(
    `INSERT INTO people (id, external_id, first_name, last_name, phone)
     SELECT i, gen_random_uuid(), 'Bench', 'Person ' || i, '212' || (200 + i / 5000)::text || lpad((i % 5000)::text, 4, '0')
     FROM generate_series(1, $1::int) i`, [n])
  await db.query(
    `INSERT INTO index_cases (id, person_id, county_fips, case_id, data, opened_on)
     SELECT i, i, 61, gen_random_uuid(), '{}', current_date - 2 FROM generate_series(1, $1::int) i`, [n])
  await db.query(
    `INSERT INTO lab_results (id, index_case_id, accession_number, positive, tested_on, data)
     SELECT i, i, 'BENCH' || i, true, current_date - 2, jsonb_build_object('eclrs_create_date', (current_date - 1)::text)
     FROM generate_series(1, $1::int) i`, [n])
}

/** Every result marked anew, as link marks a new positive; nothing of an earlier phase kept. */
async function markAll(db: Db) {
  await db.exec('TRUNCATE exposure_queue, exposure_notices, exposure_events, phone_lookups, rate_limits')
  await db.exec('INSERT INTO exposure_queue (lab_result_id, person_id) SELECT r.id, c.person_id FROM lab_results r JOIN index_cases c ON c.id = r.index_case_id')
  await db.exec('VACUUM ANALYZE')
}

type EnxStats = VerificationSandbox['stats']
// eslint-disable-next-line @typescript-eslint/no-explicit-any -- a report: figures by name, printed as JSON
type PhaseResult = { [figure: string]: any; check: { pass: boolean; checks: Record<string, boolean>; phones_texted_twice: number } }

async function runPhase(phase: 'unlimited' | 'quota', db: Db, kind: string, lookup: SandboxProcess): Promise<PhaseResult> {
  const quota = phase === 'quota' ? QUOTA : undefined
  await markAll(db)
  const enx = await spawnSandbox('verification', ['--api-key', 'bench', '--latency', String(LATENCY), '--seed', '1',
    ...(quota ? ['--quota', String(quota)] : [])])
  try {
    const config = loadConfig({
      HERALD_ENX_URL: enx.url, HERALD_ENX_API_KEY: 'bench', HERALD_LOOKUP_URL: lookup.url, HERALD_TWILIO_ACCOUNT_SID: 'ACbench',
      HERALD_TWILIO_AUTH_TOKEN: 'bench', HERALD_SECRET_KEY: SECRET, HERALD_WORKER_ID: 'bench',
      HERALD_LOOKUP_CONCURRENCY: String(LOOKUP_C), HERALD_ENX_CONCURRENCY: String(ISSUE_C),
    })
    const services = {
      verification: new VerificationClient({ url: enx.url, apiKey: 'bench', timeoutMs: 30_000 }),
      lookup: new LookupClient({ url: lookup.url, accountSid: 'ACbench', authToken: 'bench', timeoutMs: 30_000 }),
    }
    const counters = new Counters()
    const run = new AbortController()
    const onStop = () => run.abort()
    stop.signal.addEventListener('abort', onStop)
    const deadline = quota ? setTimeout(() => run.abort(), MINUTES * 60_000) : undefined
    const lookups0 = (await lookup.get<{ requests: number }>('/sandbox/stats')).requests
    const cpu0 = process.cpuUsage()
    const started = Date.now()
    const t0 = performance.now()
    const ticker = setInterval(() => {
      const s = (performance.now() - t0) / 1000
      void Promise.all([enx.get<EnxStats>('/sandbox/stats'), db.query(
        `SELECT (SELECT count(*) FROM exposure_queue)::int AS marks, count(*) FILTER (WHERE state = 'pending')::int AS pending,
           count(*) FILTER (WHERE state = 'phone_checked')::int AS checked FROM exposure_notices`)]).then(([st, [q]]) =>
        progress(`${kind} ${phase}: ${s.toFixed(0)} s, waiting: ${q.marks} marks, ${q.pending} pending, ${q.checked} phone checked; ` +
          `${st.issued} codes issued (${Math.round(st.issued / s)}/s), ${st.status429} × 429`), () => {})
    }, 5000)
    try {
      // As `herald start` runs them: each engine in its own loop, polling at the configured interval when idle.
      await runEngines(db, exposureEngines(config, log, services), {
        untilIdle: !quota, pollIntervalMs: config.pollIntervalMs, signal: run.signal, counters, log,
      })
    } finally {
      clearInterval(ticker)
      clearTimeout(deadline)
      stop.signal.removeEventListener('abort', onStop)
      await Promise.all([services.verification.close(), services.lookup.close()])
    }
    if (stop.signal.aborted) throw new Error('interrupted')
    const seconds = (performance.now() - t0) / 1000
    const ended = Date.now()
    const cpu = process.cpuUsage(cpu0)
    const stats = await enx.get<EnxStats>('/sandbox/stats')
    const ledger = await enx.get<LedgerEntry[]>('/sandbox/ledger')
    const lookups = (await lookup.get<{ requests: number }>('/sandbox/stats')).requests - lookups0
    const states = Object.fromEntries((await db.query(
      `SELECT coalesce(state || ':' || reason, state) AS s, count(*)::int AS n FROM exposure_notices GROUP BY 1 ORDER BY 1`)).map((r) => [r.s, r.n]))
    const texted = new Map<string, number>()
    for (const e of ledger) texted.set(e.phone, (texted.get(e.phone) ?? 0) + 1)
    const twice = [...texted.values()].filter((c) => c > 1).length
    const issued = states.issued ?? 0
    const checks: Record<string, boolean> = {
      'no phone texted twice': twice === 0,
      'every code texted is recorded issued': ledger.length === issued,
    }
    const result: Record<string, unknown> = {
      phase, db: kind, people: N, latency_ms: LATENCY, lookup_concurrency: LOOKUP_C, issue_concurrency: ISSUE_C,
      pool: kind === 'postgres' ? POOL : undefined, seconds: r3(seconds), issued, states, lookups,
      requests: stats.requests, status429: stats.status429, node_cpu_s: r1((cpu.user + cpu.system) / 1e6),
      sandbox_cpu_s: { verification: enx.cpuSeconds(), lookup: lookup.cpuSeconds() },
    }
    if (!quota) {
      checks[`all ${N} issued`] = issued === N
      const first = ledger[0]?.at ?? started
      const last = ledger.at(-1)?.at ?? started
      Object.assign(result, {
        codes_per_s: r1(issued / seconds),
        // The issue step alone: first code to last, while lookups ran alongside.
        codes_per_s_first_to_last: r1(issued / Math.max((last - first) / 1000, 0.001)),
        lookups_per_s: r1(lookups / seconds),
        target: 'codes/s ≥ 1000', met: issued / seconds >= 1000,
      })
    } else {
      const perWindow = new Map<number, number>()
      for (const e of ledger) perWindow.set(Math.floor(e.at / WINDOW_MS) * WINDOW_MS, (perWindow.get(Math.floor(e.at / WINDOW_MS) * WINDOW_MS) ?? 0) + 1)
      const whole: { start: string; issued: number; status429: number }[] = []
      // Whole windows while people were still waiting: a window in which the last of them got their
      // code could not use its quota, whatever the pacer did.
      const supplied = Math.min(ended, ledger.length === N ? ledger.at(-1)!.at : ended)
      for (let w = Math.ceil(started / WINDOW_MS) * WINDOW_MS; w + WINDOW_MS <= supplied; w += WINDOW_MS) {
        const start = new Date(w).toISOString()
        whole.push({ start, issued: perWindow.get(w) ?? 0, status429: stats.status429ByWindow[start] ?? 0 })
      }
      const inWhole = whole.reduce((a, w) => a + w.issued, 0)
      const ratio = inWhole / (QUOTA * Math.max(whole.length, 1))
      const max429 = Math.max(0, ...Object.values(stats.status429ByWindow))
      checks['whole windows ≥ 2'] = whole.length >= 2
      Object.assign(result, {
        quota_per_minute: QUOTA, minutes: MINUTES, whole_windows: whole, issued_in_whole_windows: inWhole,
        allowed_in_whole_windows: QUOTA * whole.length, ratio: r3(ratio), status429_by_window: stats.status429ByWindow, max_429_in_a_window: max429,
        target: 'issued / allowed ≥ 0.95, ≤ 1 429 per window', met: ratio >= 0.95 && max429 <= 1,
      })
    }
    return { ...result, check: { pass: Object.values(checks).every(Boolean), checks, phones_texted_twice: twice } }
  } finally {
    await enx.close()
  }
}

async function main() {
  const kind = (args.db ?? (await defaultDb())) as string
  if (kind !== 'postgres' && kind !== 'pglite') throw new Error('--db must be postgres or pglite')
  let lookup: SandboxProcess | undefined
  const fresh = await freshDb(kind, 'exposure', POOL)
  const db = fresh.db
  try {
    progress(`${kind}: migrating, seeding ${N} people`)
    await migrate(db)
    await seedPeople(db, N)
    lookup = await spawnSandbox('lookup', ['--account-sid', 'ACbench', '--auth-token', 'bench', '--latency', String(LATENCY)])
    const phases: PhaseResult[] = []
    for (const phase of PHASES as ('unlimited' | 'quota')[]) {
      progress(`${kind}: phase "${phase}": ${N} people, latency ${LATENCY} ms${phase === 'quota' ? `, quota ${QUOTA}/minute for ${MINUTES} minutes` : ''}`)
      const p = await runPhase(phase, db, kind, lookup)
      progress(`${kind} ${phase}: ${JSON.stringify({ seconds: p.seconds, issued: p.issued, codes_per_s: p.codes_per_s, ratio: p.ratio, met: p.met, pass: p.check.pass })}`)
      phases.push(p)
    }
    const peakRssMb = Math.round(process.resourceUsage().maxRSS / 1024)
    if (args.json) {
      console.log(JSON.stringify({ phases, peak_rss_mb: peakRssMb }, null, 2))
    } else {
      for (const p of phases) console.log(`\n## ${p.phase}\n${JSON.stringify(p, null, 2)}`)
      console.log('\n| phase | db | people | latency ms | seconds | issued | codes/s | quota/min | whole windows | issued / allowed | max 429 in a window | target | no phone twice |')
      console.log('| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |')
      for (const p of phases) {
        console.log(`| ${p.phase} | ${p.db} | ${N.toLocaleString('en-US')} | ${LATENCY} | ${p.seconds.toFixed(1)} | ${p.issued.toLocaleString('en-US')} | ${p.codes_per_s ? Math.round(p.codes_per_s) : '–'} | ${p.quota_per_minute ?? '–'} | ${p.whole_windows?.length ?? '–'} | ${p.ratio ?? '–'} | ${p.max_429_in_a_window ?? p.status429} | ${p.met ? 'met' : 'NOT met'} | ${p.check.pass ? 'pass' : 'FAIL'} |`)
      }
      console.log(`\npeak RSS ${peakRssMb} MB (process.resourceUsage().maxRSS${kind === 'pglite' ? '; PGlite included' : ''})`)
    }
    if (!phases.every((p) => p.check.pass)) process.exitCode = 1
  } finally {
    await lookup?.close().catch((e) => progress(`closing the lookup sandbox: ${e}`))
    await fresh.drop().catch((e) => progress(`dropping the database: ${e}`))
  }
}

await runInterruptible(main, stop, progress, 'the sandboxes were closed and the database dropped')
