/**
 * Bulk job benchmark: a CSV of N rows from upload to every text handed to the SMS sandbox (Twilio's
 * API, a process of its own). Rows per second, end to end and per stage.
 *
 *   npm run bench:jobs [-- --rows 100000 --latency 0 --concurrency 64 --db postgres|pglite --pool 8 --json]
 *
 * Stages: upload (every row checked, the file put in the object store, the job recorded), then the
 * jobs engine (notifications created 2,000 at a time by COPY) and the send engine (rendered, counted,
 * handed to the provider, --concurrency at a time) running side by side as `herald start` runs them.
 * No delivery receipts (the texts carry no callback URL): only the way out is measured. Printed
 * besides: texts handed over per second (all, the first 10%, the last 10%: flat means no slowdown as
 * the table fills), at a latency its ratio to the ceiling concurrency ÷ latency, and the CPU seconds
 * of Herald, the sandbox and the PostgreSQL backends (the machine has two cores for all three).
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { loadavg, tmpdir } from 'node:os'
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'
import { parseArgs } from 'node:util'
import { loadConfig } from '../src/config.ts'
import { migrate } from '../src/db/migrate.ts'
import type { Db } from '../src/db/types.ts'
import { runEngines } from '../src/engine/runner.ts'
import { createLogger } from '../src/log.ts'
import { Directory } from '../src/messaging/api/directory.ts'
import { messagingKeys } from '../src/messaging/index.ts'
import { createJob, jobsEngine } from '../src/messaging/jobs/jobs.ts'
import { sendEngine } from '../src/messaging/send/engine.ts'
import { registerProviders } from '../src/messaging/send/providers.ts'
import { TwilioSms } from '../src/messaging/send/twilio.ts'
import { createService, createTemplate } from '../src/messaging/services.ts'
import { LocalStore } from '../src/storage/local.ts'
import { defaultDb, spawnSandbox } from './process.ts'
import { freshDb } from './targets.ts'

const { values: args } = parseArgs({
  options: {
    rows: { type: 'string', default: '100000' },
    latency: { type: 'string', default: '0' },
    concurrency: { type: 'string', default: '64' },
    db: { type: 'string' },
    pool: { type: 'string', default: '8' },
    json: { type: 'boolean', default: false },
  },
})
const N = Number(args.rows)
if (!Number.isInteger(N) || N < 1 || N > 5_600_000) throw new Error('--rows must be a whole number from 1 to 5,600,000')
const progress = (msg: string) => process.stderr.write(`${msg}\n`)
const log = createLogger('silent')
const r1 = (x: number) => Math.round(x * 10) / 10

/** N rows of distinct valid numbers: 212-(200…999)-(0000…6999), clear of the sandbox's failure patterns (7xxx). */
function csv(n: number): Buffer {
  const lines = ['phone number,name,ref']
  for (let i = 0; i < n; i++) lines.push(`+1 212 ${200 + Math.floor(i / 7000)} ${String(i % 7000).padStart(4, '0')},Person ${i},R${i}`)
  return Buffer.from(lines.join('\n'))
}

async function main() {
  const kind = (args.db ?? (await defaultDb())) as 'postgres' | 'pglite'
  if (kind !== 'postgres' && kind !== 'pglite') throw new Error('--db must be postgres or pglite')
  const dir = mkdtempSync(join(tmpdir(), 'herald-bench-jobs-'))
  const sms = await spawnSandbox('sms', ['--provider', 'twilio', '--account-sid', 'ACbench', '--auth-token', 'bench', '--latency', String(args.latency)])
  const fresh = await freshDb(kind, 'jobs', Number(args.pool))
  const db = fresh.db
  try {
    await migrate(db)
    const config = loadConfig({ HERALD_SECRET_KEY: 'bench-secret-key-bench-secret-key-0123456789' })
    const { sealer } = messagingKeys(config)
    const service = await createService(db, { name: 'Bench', smsSender: 'BENCH', messageLimit: 100_000_000 })
    const template = await createTemplate(db, service.id, 'Result', 'Hello ((name)), your test result is ready. Reference ((ref)).', 'bench')
    const store = new LocalStore(join(dir, 'jobs'))
    const file = csv(N)
    progress(`${kind}: ${N} rows (${(file.length / 2 ** 20).toFixed(1)} MB), SMS sandbox at ${sms.url}, latency ${args.latency} ms, send concurrency ${args.concurrency}`)

    const t0 = performance.now()
    const job = await createJob({ db, dir: new Directory(db, 0), sealer, region: 'US', store }, {
      service, template: (await new Directory(db, 0).template(service.id, template.id))!, keyType: 'normal', apiKeyId: null, csv: file, name: 'bench.csv', createdBy: 'bench' })
    if (!job.ok) throw new Error(`upload refused: ${job.errors.slice(0, 3).join('; ')}`)
    const t1 = performance.now()
    progress(`upload: ${r1((t1 - t0) / 1000)} s (${Math.round(N / ((t1 - t0) / 1000))} rows/s checked)`)

    const provider = new TwilioSms({ url: sms.url, accountSid: 'ACbench', authToken: 'bench', timeoutMs: 30_000, connections: Number(args.concurrency) })
    await registerProviders(db, ['twilio'])
    let jobDone: number | undefined
    const ticker = setInterval(async () => {
      const [r] = await db.query(`SELECT (SELECT rows_done FROM jobs) AS made, count(*) FILTER (WHERE status <> 'created')::int AS handed FROM notifications`)
      if (r.made === N && jobDone === undefined) jobDone = performance.now()
      progress(`${r1((performance.now() - t1) / 1000)} s: ${r.made} notifications made, ${r.handed} handed to the provider`)
    }, 2000)
    try {
      await runEngines(db, [
        jobsEngine({ sealer, region: 'US', store }, log),
        sendEngine({ providers: [provider], sealer, region: 'US', concurrency: Number(args.concurrency), recoverySeconds: 300, log, workerId: 'bench' }),
      ], { untilIdle: true, pollIntervalMs: 100, signal: new AbortController().signal, log })
    } finally {
      clearInterval(ticker)
      await provider.close()
    }
    const t2 = performance.now()
    const stats = await sms.get<{ accepted: number }>('/sandbox/stats')
    const [c] = await db.query(`SELECT count(*)::int AS n, count(*) FILTER (WHERE status = 'sending')::int AS sending, count(DISTINCT job_row)::int AS rows FROM notifications`)
    const seconds = (t2 - t0) / 1000
    const pace = await handOver(db, N)
    const pgCpu = await backendCpu(db)
    const latency = Number(args.latency)
    // With latency, at most `concurrency` calls in flight each `latency` ms: the ceiling; the target is 0.9 of it.
    const ceiling = latency > 0 ? Math.round((Number(args.concurrency) * 1000) / latency) : undefined
    const result = {
      db: kind, rows: N, latency_ms: Number(args.latency), concurrency: Number(args.concurrency), upload_s: r1((t1 - t0) / 1000),
      create_and_send_s: r1((t2 - t1) / 1000), total_s: r1(seconds), rows_per_s: Math.round(N / seconds),
      handed_per_s: pace.all, first_10pct_per_s: pace.first, last_10pct_per_s: pace.last, last_vs_first: pace.ratio,
      ...(ceiling ? { ceiling_per_s: ceiling, of_ceiling: Math.round((pace.all / ceiling) * 100) / 100 } : {}),
      notifications: c.n, distinct_rows: c.rows, sending: c.sending, handed_to_sandbox: stats.accepted,
      herald_cpu_s: r1(process.cpuUsage().user / 1e6 + process.cpuUsage().system / 1e6), sandbox_cpu_s: sms.cpuSeconds(), postgres_cpu_s: pgCpu,
      load: loadavg().map((x) => r1(x)),
      peak_rss_mb: Math.round(process.resourceUsage().maxRSS / 1024),
      check: c.n === N && c.rows === N && stats.accepted === N ? 'pass' : 'FAIL',
    }
    console.log(JSON.stringify(result, null, 2))
    if (!args.json) {
      const n = (x: number | undefined) => (x === undefined ? '–' : x.toLocaleString('en-US'))
      console.log('\n| db | rows | latency ms | concurrency | upload s | create + send s | total s | rows/s | handed over /s | first 10% /s | last 10% /s | last ÷ first | check |')
      console.log('| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |')
      console.log(`| ${kind} | ${n(N)} | ${latency} | ${args.concurrency} | ${result.upload_s} | ${result.create_and_send_s} | ${result.total_s} | ${n(result.rows_per_s)} | ${n(pace.all)}${ceiling ? ` (${result.of_ceiling} of ${n(ceiling)})` : ''} | ${n(pace.first)} | ${n(pace.last)} | ${pace.ratio} | ${result.check} |`)
    }
    if (result.check !== 'pass') process.exitCode = 1
  } finally {
    await sms.close()
    await fresh.drop().catch((e) => progress(`dropping the database: ${e}`))
    rmSync(dir, { recursive: true, force: true })
  }
}

/**
 * Texts handed over per second, by the time each was recorded as sent (sent_at, written in batches
 * just after the provider's answer): over all, over the first 10% and over the last 10%, so a
 * slowdown as the queue's table fills shows as last ÷ first below 1.
 */
async function handOver(db: Db, n: number) {
  const tenth = Math.max(1, Math.floor(n / 10))
  const [r] = await db.query(
    `WITH s AS (SELECT extract(epoch FROM sent_at)::float8 AS t, row_number() OVER (ORDER BY sent_at) AS i FROM notifications WHERE sent_at IS NOT NULL)
     SELECT min(t) AS t0, max(t) FILTER (WHERE i <= $1) AS t10, min(t) FILTER (WHERE i > $2) AS t90, max(t) AS t100 FROM s`, [tenth, n - tenth])
  const rate = (k: number, a: number, b: number) => Math.round(k / Math.max(b - a, 1e-3))
  const first = rate(tenth, r.t0, r.t10)
  const last = rate(tenth, r.t90, r.t100)
  return { all: rate(n, r.t0, r.t100), first, last, ratio: Math.round((last / first) * 100) / 100 }
}

/** CPU seconds of the PostgreSQL backends serving this run's pool (a local server, Linux /proc), if they can be read. */
async function backendCpu(db: Db): Promise<number | undefined> {
  try {
    const pids = await db.query(`SELECT pid FROM pg_stat_activity WHERE datname = current_database()`)
    let ticks = 0
    for (const { pid } of pids) {
      const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ')
      ticks += Number(f[11]) + Number(f[12])
    }
    return r1(ticks / 100)
  } catch {
    return undefined
  }
}

await main()
