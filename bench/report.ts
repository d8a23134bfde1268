/**
 * Report benchmark: one bulk job's report of N notifications (default 1,000,000), streamed to a file
 * by `herald report --job` in a process of its own, so that the memory measured is that command's
 * and none of the seeding's. Targets (issue 19): ≥ 150,000 rows/s and a peak RSS under 200 MB.
 *
 *   npm run bench:report [-- --rows 1000000 --db postgres|pglite --db-url postgres://… --keep --json]
 *
 * Setup, not timed: a fresh database (PostgreSQL: created on --db-url's server, default DATABASE_URL
 * else the local one, and dropped after; PGlite: a data folder under the system temp folder, which
 * the command opens as its embedded database), a service, a template, a finished job and its N
 * notifications with real sealed numbers (+1 212 2XX XXXX, row by row) and personalisation, written
 * by COPY as the jobs engine writes them, with the statuses sending leaves. The oldest 10% are then
 * moved to notification_history as retention moves them, so the report reads both tables and shows
 * those rows without a number; both tables are vacuumed and analysed.
 *
 * Timed: the command from its start to its exit (rows/s, the figure judged) and from its first
 * bytes to its exit (streaming alone); its CPU seconds and peak RSS from /usr/bin/time, or, without
 * it, the peak from /proc (VmHWM, sampled every 20 ms); on PGlite the database engine runs inside
 * the command and counts in its RSS. The same command for a job that is not there is measured first: what
 * starting Node and tsx, loading every module, connecting and migrating cost before any row. Then
 * every line of the file is checked: N + 1 lines, rows in order, each number the one sealed for its
 * row (blank once moved). Progress to stderr; the summary (JSON) and a Markdown row to stdout.
 */
import { spawn } from 'node:child_process'
import { randomUUID } from 'node:crypto'
import { once } from 'node:events'
import { createReadStream, existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs'
import { loadavg, tmpdir } from 'node:os'
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { loadConfig } from '../src/config.ts'
import { migrate } from '../src/db/migrate.ts'
import { PgliteDb } from '../src/db/pglite.ts'
import type { Db } from '../src/db/types.ts'
import { messagingKeys } from '../src/messaging/index.ts'
import { REPORT_HEADER } from '../src/messaging/reports/report.ts'
import { createService, createTemplate } from '../src/messaging/services.ts'
import { csvCell } from '../src/util/csv.ts'

const { values: args } = parseArgs({
  options: {
    rows: { type: 'string', default: '1000000' },
    db: { type: 'string' },
    'db-url': { type: 'string' },
    keep: { type: 'boolean', default: false },
    json: { type: 'boolean', default: false },
  },
})
const N = Number(args.rows)
if (!Number.isInteger(N) || N < 1 || N > 8_000_000) throw new Error('--rows must be a whole number from 1 to 8,000,000 (the numbers of exchanges 200–999)')
if (args['db-url']) process.env.DATABASE_URL = args['db-url'] // read by targets.ts as it loads, hence the late imports
const { freshDb, targetUrl } = await import('./targets.ts')
const { defaultDb } = await import('./process.ts')

const SECRET = 'bench-secret-key-bench-secret-key-0123456789'
const MOVED = Math.floor(N / 10) // the oldest rows, in notification_history
const BATCH = 10_000
const progress = (msg: string) => process.stderr.write(`${msg}\n`)
const r1 = (x: number) => Math.round(x * 10) / 10
const thousands = (x: number) => x.toLocaleString('en-US')
/** Row i's number: distinct for every i below 8,000,000. */
const phone = (i: number) => `+1212${200 + Math.floor(i / 10000)}${String(i % 10000).padStart(4, '0')}`

const COLUMNS = ['id', 'service_id', 'template_id', 'template_version', 'key_type', 'job_id', 'job_row', 'recipient_hash', 'recipient_ct',
  'personalisation_ct', 'international', 'status', 'billable_units', 'rate_multiplier', 'provider', 'provider_ref', 'attempts', 'created_at',
  'sent_at', 'completed_at', 'updated_at']
const HISTORY = `id, service_id, template_id, template_version, notification_type, api_key_id, key_type, job_id, job_row, reference,
  international, status, billable_units, rate_multiplier, provider, created_at, sent_at, completed_at, updated_at`

/** Where the report runs: the database, the environment that points `herald` at it, and how to remove it. */
interface Target { db: Db; env: Record<string, string | undefined>; name: string; drop(): Promise<void> }

async function openTarget(kind: 'postgres' | 'pglite'): Promise<Target> {
  if (kind === 'postgres') {
    const fresh = await freshDb('postgres', 'report', 2)
    const [{ name }] = await fresh.db.query('SELECT current_database() AS name')
    return { db: fresh.db, env: { DATABASE_URL: targetUrl(name) }, name, drop: fresh.drop }
  }
  // The command's embedded database: <HERALD_DATA_DIR>/pgdata, opened by one process at a time.
  const dir = mkdtempSync(join(tmpdir(), 'herald-bench-report-'))
  const db = await PgliteDb.open(join(dir, 'pgdata'))
  return { db, env: { DATABASE_URL: undefined, HERALD_DATA_DIR: dir }, name: dir, drop: async () => rmSync(dir, { recursive: true, force: true }) }
}

/** The service, template and finished job, then N notifications, the oldest 10% moved to history. */
async function seed(db: Db) {
  const { sealer } = messagingKeys(loadConfig({ HERALD_SECRET_KEY: SECRET }))
  const service = await createService(db, { name: 'Bench', smsSender: 'BENCH', messageLimit: 100_000_000 })
  const template = await createTemplate(db, service.id, 'Result', 'Hello ((name)), your test result is ready. Reference ((ref)).', 'bench')
  const jobId = randomUUID()
  const start = new Date(Date.now() - 8 * 86_400_000)
  await db.query(`INSERT INTO jobs (id, service_id, template_id, template_version, key_type, file_uri, original_name, rows, rows_done, status,
      created_by, created_at, started_at, finished_at) VALUES ($1, $2, $3, 1, 'normal', 'bench://report.csv', 'bench.csv', $4, $4, 'finished', 'bench', $5, $5, $6)`,
    [jobId, service.id, template.id, N, start, new Date(start.getTime() + N * 3)])
  const t0 = performance.now()
  for (let from = 0; from < N; from += BATCH) {
    const rows: unknown[][] = []
    for (let i = from; i < Math.min(N, from + BATCH); i++) {
      const at = new Date(start.getTime() + i * 3) // a row every 3 ms: 20,000 a minute
      const u = i % 100
      const status = u < 91 ? 'delivered' : u < 95 ? 'temporary-failure' : u < 98 ? 'permanent-failure' : u < 99 ? 'sent' : 'technical-failure'
      const handed = status !== 'technical-failure'
      const number = phone(i)
      rows.push([randomUUID(), service.id, template.id, 1, 'normal', jobId, i + 2, sealer.hash(number), sealer.seal(number),
        sealer.seal(JSON.stringify({ name: `Person ${i}`, ref: `R${i}` })), false, status, handed ? 1 : null, handed ? 1 : null,
        handed ? 'twilio' : null, handed ? `SM${randomUUID().replaceAll('-', '')}` : null, 1, at, handed ? new Date(at.getTime() + 500) : null,
        new Date(at.getTime() + 4000), new Date(at.getTime() + 4000)])
    }
    await db.copyInto('notifications', COLUMNS, rows)
    const done = Math.min(N, from + BATCH)
    if (done % 100_000 === 0 || done === N) progress(`seed: ${thousands(done)} notifications sealed and written, ${r1((performance.now() - t0) / 1000)} s`)
  }
  // As retention moves a batch: one statement, so no snapshot sees a row twice or not at all.
  await db.query(`WITH moved AS (DELETE FROM notifications WHERE job_id = $1 AND job_row < $2 RETURNING ${HISTORY})
    INSERT INTO notification_history (${HISTORY}) SELECT ${HISTORY} FROM moved`, [jobId, MOVED + 2])
  await db.query('VACUUM (ANALYZE) notifications')
  await db.query('VACUUM (ANALYZE) notification_history')
  progress(`seed: ${thousands(MOVED)} oldest moved to notification_history; ${r1((performance.now() - t0) / 1000)} s in all`)
  return { serviceId: service.id, jobId }
}

/**
 * Runs `herald ARGS` and waits for its exit: seconds to exit and from the first bytes of `out`, CPU
 * seconds and peak RSS in MB (/usr/bin/time), exit code and standard error.
 */
async function runHerald(env: Record<string, string | undefined>, argv: string[], out: string) {
  const bin = fileURLToPath(new URL('../bin/herald.js', import.meta.url))
  const timeFile = `${out}.time`
  const withTime = existsSync('/usr/bin/time')
  const options = { env: { ...process.env, HERALD_SECRET_KEY: SECRET, ...env }, stdio: ['ignore', 'ignore', 'pipe'] as ('ignore' | 'pipe')[] }
  const t0 = performance.now()
  const child = withTime ? spawn('/usr/bin/time', ['-f', '%M %U %S', '-o', timeFile, bin, ...argv], options) : spawn(bin, argv, options)
  let stderr = ''
  child.stderr!.on('data', (b) => (stderr += b))
  const exited = once(child, 'exit')
  let first: number | undefined
  let hwmKb = 0
  let cpu: number | undefined
  const poll = setInterval(() => {
    if (first === undefined && existsSync(out) && statSync(out).size > 0) first = performance.now()
    if (!withTime) {
      try {
        hwmKb = Math.max(hwmKb, Number(/VmHWM:\s+(\d+)/.exec(readFileSync(`/proc/${child.pid}/status`, 'utf8'))?.[1] ?? 0))
      } catch {} // gone
    }
  }, 20)
  const [code] = await exited
  const t1 = performance.now()
  clearInterval(poll)
  if (withTime) {
    // GNU time writes "Command exited with non-zero status N" first when it did.
    const [kb, user, system] = readFileSync(timeFile, 'utf8').trim().split('\n').pop()!.split(' ').map(Number)
    hwmKb = kb
    cpu = r1(user + system)
    rmSync(timeFile, { force: true })
  }
  return { code: code as number | null, stderr: stderr.replace(/^Command exited with non-zero status \d+\n?/m, '').trim(), seconds: (t1 - t0) / 1000,
    streamSeconds: (t1 - (first ?? t0)) / 1000, cpuSeconds: cpu, peakRssMb: Math.round(hwmKb / 1024), rssFrom: withTime ? '/usr/bin/time' : 'VmHWM, sampled' }
}

// By name: a column added to the report (Failure reason) must not shift what is checked.
const ROW = REPORT_HEADER.indexOf('Row')
const JOB = REPORT_HEADER.indexOf('Job')

/** Every line: the header, then rows 2… in order, each number the one sealed for its row, blank for the rows moved. */
async function check(out: string, jobId: string) {
  const c = { lines: 0, numbers: 0, blank: 0, wrong: 0 }
  let expected = 2
  for await (const line of createInterface({ input: createReadStream(out), crlfDelay: Infinity })) {
    if (c.lines++ === 0) {
      if (line !== REPORT_HEADER.join(',')) c.wrong++
      continue
    }
    const f = line.split(',')
    const i = expected - 2
    const ok = f.length === REPORT_HEADER.length && Number(f[ROW]) === expected && f[JOB] === jobId && f[0] === (i < MOVED ? '' : csvCell(phone(i)))
    expected++
    if (!ok) c.wrong++
    else if (f[0]) c.numbers++
    else c.blank++
  }
  return c
}

async function main() {
  const kind = (args.db ?? (await defaultDb())) as 'postgres' | 'pglite'
  if (kind !== 'postgres' && kind !== 'pglite') throw new Error('--db must be postgres or pglite')
  const target = await openTarget(kind)
  const out = join(mkdtempSync(join(tmpdir(), 'herald-bench-report-out-')), 'report.csv')
  let open = true
  try {
    await migrate(target.db)
    progress(`${kind} (${target.name}): a job of ${thousands(N)} rows, ${thousands(MOVED)} of them in notification_history`)
    const { serviceId, jobId } = await seed(target.db)
    if (kind === 'pglite') {
      await target.db.close() // the command opens the folder itself, and only one process may
      open = false
    }
    // What the command costs before any row: started, connected, migrated, the service found, the job not.
    const idle = await runHerald(target.env, ['report', '--service', serviceId, '--job', randomUUID(), '--out', `${out}.none`], `${out}.none`)
    if (!/no job/.test(idle.stderr)) throw new Error(`herald report of no job: ${idle.stderr || `exit ${idle.code}`}`)
    progress(`herald report of no job: ${r1(idle.seconds)} s, ${idle.peakRssMb} MB peak`)
    progress('herald report --job: running')
    const loadBefore = loadavg()[0] // the machine may be shared: its 1-minute load is reported with the figures
    const run = await runHerald(target.env, ['report', '--service', serviceId, '--job', jobId, '--out', out], out)
    if (run.code !== 0) throw new Error(`herald report exited with ${run.code}: ${run.stderr}`)
    const bytes = statSync(out).size
    progress(`herald report --job: ${r1(run.seconds)} s, ${run.peakRssMb} MB peak; checking the file`)
    const c = await check(out, jobId)
    const rowsPerS = Math.round(N / run.seconds)
    const met = { rows_per_s: rowsPerS >= 150_000, rss: run.peakRssMb < 200 }
    const pass = c.lines === N + 1 && c.wrong === 0 && c.numbers === N - MOVED && c.blank === MOVED
    const result = {
      db: kind, rows: N, in_history: MOVED, file_mb: r1(bytes / 2 ** 20), seconds: r1(run.seconds), rows_per_s: rowsPerS,
      load_1m: [r1(loadBefore), r1(loadavg()[0])],
      streaming_s: r1(run.streamSeconds), streaming_rows_per_s: Math.round(N / run.streamSeconds), cpu_s: run.cpuSeconds, peak_rss_mb: run.peakRssMb, peak_rss_from: run.rssFrom,
      no_rows: { seconds: r1(idle.seconds), cpu_s: idle.cpuSeconds, peak_rss_mb: idle.peakRssMb },
      lines: c.lines, numbers_checked: c.numbers, blank_numbers: c.blank, wrong_lines: c.wrong, check: pass ? 'pass' : 'FAIL',
      targets: '≥ 150,000 rows/s (start to exit), peak RSS < 200 MB', met,
    }
    console.log(JSON.stringify(result, null, 2))
    if (!args.json) {
      console.log('\n| db | rows | s (start to exit) | rows/s | streaming rows/s | CPU s | peak RSS MB | no rows: s, MB | file MB | load (1 min) | check | targets |')
      console.log('| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |')
      console.log(`| ${kind} | ${thousands(N)} | ${result.seconds} | ${thousands(rowsPerS)} | ${thousands(result.streaming_rows_per_s)} | ${run.cpuSeconds ?? '?'} | ${run.peakRssMb} | `
        + `${result.no_rows.seconds}, ${idle.peakRssMb} | ${result.file_mb} | ${result.load_1m.join(' → ')} | ${result.check} | rows/s ${met.rows_per_s ? 'met' : 'NOT met'}, RSS ${met.rss ? 'met' : 'NOT met'} |`)
    }
    if (!pass) process.exitCode = 1
  } finally {
    rmSync(join(out, '..'), { recursive: true, force: true })
    if (open) await target.db.close().catch(() => {})
    if (args.keep) progress(`kept the database: ${target.name}`)
    else await target.drop().catch((e) => progress(`dropping the database: ${e}`))
  }
}

await main()
