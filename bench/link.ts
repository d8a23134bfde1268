/**
 * Link benchmark: 200,000 ingested rows waiting for link, of which about 30% belong to people
 * linked before, with several results per person, some under a second patient key and some in a
 * second county; linked by 1 and by 2 workers, each count from the same starting state.
 *
 *   npm run bench:link [-- --rows N --db postgres,pglite --workers 1,2 --batch 4000]
 *
 * PostgreSQL: workers are processes; the starting state is copied with CREATE DATABASE … TEMPLATE.
 * PGlite admits one process: its workers are loops in one process, and the data folder is copied.
 * Prints JSON; progress goes to stderr.
 */
import { execFile } from 'node:child_process'
import { cpSync, existsSync, mkdirSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { parseArgs } from 'node:util'
import { migrate } from '../src/db/migrate.ts'
import type { Db } from '../src/db/types.ts'
import { generateEclrs } from '../src/ingest/generate.ts'
import { loadCountyFile } from '../src/cli/link.ts'
import { linkUntilEmpty } from '../src/link/index.ts'
import { createLogger } from '../src/log.ts'
import { admin, ingest, open } from './targets.ts'

const { values: args } = parseArgs({
  options: {
    rows: { type: 'string', default: '200000' },
    db: { type: 'string', default: 'postgres,pglite' },
    workers: { type: 'string', default: '1,2' },
    batch: { type: 'string', default: '4000' },
    phase: { type: 'string' }, // internal: run one phase in this process
    target: { type: 'string' },
    loops: { type: 'string', default: '1' },
  },
})

const COUNTIES = fileURLToPath(new URL('../src/sandbox/commcare/county_list_ny.json', import.meta.url))
const log = createLogger('silent')

const linkLoop = (db: Db) => linkUntilEmpty(db, Number(args.batch), log)

/** The starting state: counties, the known people's rows ingested and linked, the next rows ingested. */
async function setupPhase(target: string, known: string, next: string) {
  const db = await open(target)
  await migrate(db)
  await loadCountyFile(db, COUNTIES)
  await ingest(db, known)
  const started = performance.now()
  const first = await linkLoop(db)
  const firstSeconds = (performance.now() - started) / 1000
  const r = await ingest(db, next)
  await db.exec('VACUUM ANALYZE')
  await db.close()
  return { known_rows_linked: first, known_link_seconds: +firstSeconds.toFixed(1), next_rows: r.rows, next_new: r.totals.new }
}

async function linkPhase(target: string) {
  const db = await open(target)
  const start = Date.now()
  const counts = await Promise.all(Array.from({ length: Number(args.loops) }, () => linkLoop(db)))
  const end = Date.now()
  await db.close()
  return { start, end, counts }
}

const run = promisify(execFile)
async function child(phase: string, target: string, extra: string[] = []) {
  const { stdout } = await run(process.execPath, [...process.execArgv, process.argv[1], '--phase', phase, '--target', target,
    '--batch', args.batch!, ...extra], { encoding: 'utf8', maxBuffer: 1 << 20 })
  return JSON.parse(stdout.trim().split('\n').pop()!)
}

async function decisions(target: string) {
  const db = await open(target)
  const rows = await db.query('SELECT kind, count(*)::int AS n FROM link_events GROUP BY kind ORDER BY kind')
  const totals = await db.query(`SELECT (SELECT count(*) FROM people)::int AS people, (SELECT count(*) FROM index_cases)::int AS cases,
    (SELECT count(*) FROM lab_results)::int AS lab_results`)
  const [digest] = await db.query(`SELECT ${Object.entries(DIGESTS).map(([name, sql]) =>
    `(SELECT md5(string_agg(md5(x::text), '' ORDER BY x.k)) FROM (${sql}) x) AS ${name}`).join(', ')}`)
  await db.close()
  return { events: Object.fromEntries(rows.map((r) => [r.kind, r.n])), ...totals[0], digest }
}

/**
 * What link wrote, every column but timestamps, as one MD5 per table (jsonb's text form is
 * canonical: key order does not count). One worker links in row order, so a change to how link
 * works that keeps what it decides keeps these; two workers may decide deferred rows later.
 */
const DIGESTS: Record<string, string> = {
  people: `SELECT id AS k, id, external_id, date_of_birth, match_last, match_first, first_name, middle_name, last_name, sex, phone,
    address1, address2, city, zip FROM people`,
  person_keys: 'SELECT patient_key AS k, patient_key, person_id, lab_row_id FROM person_keys',
  index_cases: `SELECT id AS k, id, person_id, county_fips, case_id, data, closed, opened_on, activity_ended_on, reinfection_of, moved_to
    FROM index_cases`,
  lab_results: 'SELECT id AS k, id, index_case_id, accession_number, lab_row_id, positive, tested_on, data FROM lab_results',
  link_events: `SELECT array[lab_row_id, seq] AS k, lab_row_id, seq, kind, person_id, index_case_id, lab_result_id, detail FROM link_events`,
  link_changes: 'SELECT array[lab_row_id, seq] AS k, lab_row_id, seq, target, target_id, applied, dropped FROM link_changes',
  case_sync_queue: 'SELECT index_case_id AS k, index_case_id, generation FROM case_sync_queue',
  exposure_queue: 'SELECT lab_result_id AS k, lab_result_id, person_id FROM exposure_queue',
}

async function main() {
  if (args.phase === 'setup') return console.log(JSON.stringify(await setupPhase(args.target!, ...(JSON.parse(process.env.BENCH_FILES!) as [string, string]))))
  if (args.phase === 'link') {
    const result = await linkPhase(args.target!)
    const usage = process.resourceUsage()
    // The worker's own CPU (JavaScript, driver): the rest of the machine's is the database's.
    return console.log(JSON.stringify({ ...result, peak_rss_mb: Math.round(usage.maxRSS / 1024), node_cpu_s: +((usage.userCPUTime + usage.systemCPUTime) / 1e6).toFixed(1) }))
  }

  const rows = Number(args.rows)
  const dir = join(tmpdir(), 'herald-bench')
  mkdirSync(dir, { recursive: true })
  // 30% of the rows are of 40,000 people linked before; 70% of new people, about two rows each.
  const knownPeople = Math.round(rows / 5)
  const newPeople = Math.round((rows * 0.7) / 2)
  const known = join(dir, `link-known-${rows}.txt`)
  const next = join(dir, `link-next-${rows}.txt`)
  if (!existsSync(next)) {
    console.error(`generating ${known} and ${next}`)
    const people = { otherKeyFraction: 0.05, otherCountyFraction: 0.1 }
    await generateEclrs({ rows: Math.round(knownPeople * 1.5), version: 3, out: known, seed: 11,
      people: { ...people, ranges: [{ from: 0, to: knownPeople, weight: 1 }] } })
    await generateEclrs({ rows, version: 3, out: next, seed: 12,
      people: { ...people, ranges: [{ from: 0, to: knownPeople, weight: 0.3 }, { from: knownPeople, to: knownPeople + newPeople, weight: 0.7 }] } })
  }
  process.env.BENCH_FILES = JSON.stringify([known, next])
  const results = []
  for (const kind of args.db!.split(',')) {
    const name = `herald_bench_link_${process.pid}`
    const copies: string[] = []
    const base = kind === 'pglite' ? `pglite:${join(dir, `link-pglite-${process.pid}`)}` : name
    const copy = async (n: number) => {
      if (kind === 'pglite') {
        const to = `${base}-${n}`
        cpSync(base.slice(7), to.slice(7), { recursive: true })
        copies.push(to)
        return to
      }
      const to = `${name}_${n}`
      await admin(`CREATE DATABASE ${to} TEMPLATE ${name}`)
      copies.push(to)
      return to
    }
    const drop = async (t: string) => (kind === 'pglite' ? rmSync(t.slice(7), { recursive: true, force: true }) : admin(`DROP DATABASE IF EXISTS ${t} WITH (FORCE)`))
    try {
      if (kind === 'pglite') rmSync(base.slice(7), { recursive: true, force: true })
      else await admin(`CREATE DATABASE ${name}`)
      console.error(`${kind}: setting up (counties, ${known} ingested and linked, ${next} ingested)`)
      const setup = await child('setup', base)
      const runs = []
      for (const workers of args.workers!.split(',').map(Number)) {
        const target = await copy(workers)
        console.error(`${kind}: linking ${setup.next_rows} rows with ${workers} worker(s)`)
        const parts = kind === 'pglite'
          ? [await child('link', target, ['--loops', String(workers)])]
          : await Promise.all(Array.from({ length: workers }, () => child('link', target)))
        const seconds = (Math.max(...parts.map((p) => p.end)) - Math.min(...parts.map((p) => p.start))) / 1000
        const outcomes: Record<string, number> = {}
        for (const c of parts.flatMap((p) => p.counts)) for (const [k, n] of Object.entries(c as Record<string, number>)) outcomes[k] = (outcomes[k] ?? 0) + n
        // Deferred rows (another worker held one of their keys) are linked later, and counted then.
        const linked = Object.entries(outcomes).filter(([k]) => k !== 'deferred').reduce((s, [, n]) => s + n, 0)
        runs.push({ workers, seconds, rows: linked, rows_per_s: Math.round(linked / seconds), outcomes,
          peak_rss_mb: Math.max(...parts.map((p) => p.peak_rss_mb)), node_cpu_s: +parts.reduce((s, p) => s + p.node_cpu_s, 0).toFixed(1),
          after: await decisions(target) })
        await drop(target)
      }
      results.push({ db: kind, batch_rows: Number(args.batch), setup, runs })
    } finally {
      for (const t of copies) await drop(t)
      await drop(base)
    }
  }
  console.log(JSON.stringify(results, null, 2))
}

await main()
