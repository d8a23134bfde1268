/**
 * Ingest benchmark: a 1,000,000-row v3 export of which 90% of the rows were in an export ingested
 * before, against a plain COPY of the same file into an unlogged table in the same database.
 *
 *   npm run bench:ingest [-- --rows N --db postgres,pglite]
 *
 * Each phase runs in a child process of its own, so that peak RSS is the phase's own. Prints JSON.
 * PostgreSQL: a database created on DATABASE_URL's server (default the local one) and dropped after.
 * PGlite: a data folder under the system temp folder, removed after.
 */
import { execFileSync } from 'node:child_process'
import { createReadStream, existsSync, mkdirSync, rmSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pipeline } from 'node:stream/promises'
import { parseArgs } from 'node:util'
import pg from 'pg'
import { from as copyFrom } from 'pg-copy-streams'
import { migrate } from '../src/db/migrate.ts'
import { PgliteDb } from '../src/db/pglite.ts'
import { COLUMNS } from '../src/ingest/eclrs/columns.ts'
import { generateEclrs } from '../src/ingest/generate.ts'
import { foldSightings } from '../src/ingest/sightings.ts'
import { admin, ingest, open, server, targetUrl } from './targets.ts'

const { values: args } = parseArgs({
  options: {
    rows: { type: 'string', default: '1000000' },
    db: { type: 'string', default: 'postgres,pglite' },
    batch: { type: 'string', default: '10000' },
    phase: { type: 'string' }, // internal: run one phase in this process
    target: { type: 'string' },
    file: { type: 'string' },
  },
})

async function ingestPhase(target: string, file: string) {
  const db = await open(target)
  await migrate(db)
  const started = performance.now()
  const r = await ingest(db, file, Number(args.batch))
  const seconds = (performance.now() - started) / 1000
  // After the file's last commit, as the engine does it: its own figure, outside the ingest time.
  const folding = performance.now()
  const { keys } = await foldSightings(db)
  const fold = { seconds: +((performance.now() - folding) / 1000).toFixed(2), keys }
  await db.close()
  return { seconds, rows: r.rows, ...r.totals, rows_per_s: Math.round(r.rows / seconds), fold }
}

async function plainCopyPhase(target: string, file: string) {
  const db = await open(target)
  const cols = COLUMNS[3].map((c) => `${c.toLowerCase()} text`).join(', ')
  await db.exec(`DROP TABLE IF EXISTS plain_copy; CREATE UNLOGGED TABLE plain_copy (${cols})`)
  const copy = `COPY plain_copy FROM %s WITH (FORMAT csv, DELIMITER '|', HEADER true)`
  const started = performance.now()
  if (db instanceof PgliteDb) {
    const { openAsBlob } = await import('node:fs')
    await db.pglite.query(copy.replace('%s', `'/dev/blob'`), [], { blob: await openAsBlob(file) })
  } else {
    const client = new pg.Client({ connectionString: targetUrl(target) })
    await client.connect()
    await pipeline(createReadStream(file, { highWaterMark: 1 << 20 }), client.query(copyFrom(copy.replace('%s', 'STDIN'))))
    await client.end()
  }
  const seconds = (performance.now() - started) / 1000
  const [{ n }] = await db.query('SELECT count(*) AS n FROM plain_copy')
  await db.exec('DROP TABLE plain_copy')
  await db.close()
  return { seconds, rows: n, rows_per_s: Math.round(n / seconds) }
}

/** Runs one phase in a fresh process; returns its result and its peak RSS. */
function child(phase: string, target: string, file: string) {
  const out = execFileSync(process.execPath, [...process.execArgv, process.argv[1], '--phase', phase, '--target', target, '--file', file, '--batch', args.batch!], {
    encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], maxBuffer: 1 << 20,
  })
  return JSON.parse(out.trim().split('\n').pop()!)
}

async function main() {
  if (args.phase) {
    const result = args.phase === 'ingest' ? await ingestPhase(args.target!, args.file!) : await plainCopyPhase(args.target!, args.file!)
    console.log(JSON.stringify({ ...result, peak_rss_mb: Math.round(process.resourceUsage().maxRSS / 1024) }))
    return
  }
  const rows = Number(args.rows)
  const dir = join(tmpdir(), 'herald-bench')
  mkdirSync(dir, { recursive: true })
  const earlier = join(dir, `earlier-${rows}.txt`)
  const next = join(dir, `next-${rows}.txt`)
  if (!existsSync(next)) {
    console.error(`generating ${earlier} and ${next} (${rows} rows each, v3, 90% of the second repeated from the first)`)
    await generateEclrs({ rows, version: 3, out: earlier, seed: 1 })
    await generateEclrs({ rows, version: 3, out: next, seed: 2, repeatFrom: earlier, repeatFraction: 0.9 })
  }
  const results = []
  for (const kind of args.db!.split(',')) {
    let target: string
    let cleanup: () => void
    if (kind === 'pglite') {
      const folder = join(dir, `pglite-${process.pid}`)
      rmSync(folder, { recursive: true, force: true })
      target = `pglite:${folder}`
      cleanup = () => rmSync(folder, { recursive: true, force: true })
    } else {
      const name = `herald_bench_${process.pid}`
      await admin(`CREATE DATABASE ${name}`)
      target = name
      cleanup = () => execFileSync('psql', [server, '-qc', `DROP DATABASE IF EXISTS ${name} WITH (FORCE)`])
    }
    try {
      console.error(`${kind}: ingesting the earlier export`)
      const first = child('ingest', target, earlier)
      console.error(`${kind}: ingesting the next export (90% seen)`)
      const ingest = child('ingest', target, next)
      console.error(`${kind}: plain COPY of the next export`)
      const plain = child('copy', target, next)
      results.push({
        db: kind, rows, file_mb: Math.round(statSync(next).size / 2 ** 20), batch_rows: Number(args.batch),
        first_file: first, ingest, plain_copy: plain, ratio_to_plain_copy: +(ingest.rows_per_s / plain.rows_per_s).toFixed(2),
      })
    } finally {
      cleanup()
    }
  }
  console.log(JSON.stringify(results, null, 2))
}

await main()
