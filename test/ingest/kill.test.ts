/**
 * A real crash: `herald ingest` is killed with SIGKILL in the middle of a file, then run again.
 * PostgreSQL only: PGlite keeps its database inside the process that was killed.
 */
import { describe, expect, it } from 'vitest'
import { spawn, execFile } from 'node:child_process'
import { promisify } from 'node:util'
import { join } from 'node:path'
import { onPostgres } from '../helpers/db.ts'
import { BIN, processWorld } from '../helpers/kill.ts'
import { exportText, row, writeExport } from '../helpers/files.ts'

const run = promisify(execFile)
const w = processWorld()
const { tmp } = w

describe.runIf(onPostgres)('a worker killed mid-file (PostgreSQL)', () => {
  it('leaves committed batches, and the rerun counts every row exactly once', { timeout: 180_000 }, async () => {
    const rows = Array.from({ length: 20000 }, () => row(3))
    const path = writeExport(tmp.dir, 'big.txt', exportText(3, [...rows, ...rows.slice(0, 500)]))
    // Small batches and a short lease: the killed worker's claim runs out quickly.
    const env = { ...process.env, DATABASE_URL: w.t.url, HERALD_INGEST_BATCH_ROWS: '500', HERALD_CLAIM_LEASE_SECONDS: '1', HERALD_LOG_LEVEL: 'silent', HERALD_DATA_DIR: join(tmp.dir, '.herald') }
    const child = spawn(process.execPath, [BIN, 'ingest', path], { env, stdio: 'ignore' })
    // Kill it once some batches are in, well before the end.
    let committed = 0
    for (let i = 0; i < 600 && committed < 2000; i++) {
      await new Promise((r) => setTimeout(r, 50))
      committed = (await w.t.db.query('SELECT coalesce(max(total_rows), 0) AS n FROM files'))[0].n
    }
    child.kill('SIGKILL')
    await new Promise((r) => child.on('exit', r))
    const [mid] = await w.t.db.query('SELECT total_rows, status FROM files')
    expect(mid.status).toBe('ingesting')
    expect(mid.total_rows).toBeGreaterThan(0)
    expect(mid.total_rows).toBeLessThan(20500)

    await new Promise((r) => setTimeout(r, 1100)) // past the dead worker's lease
    const { stdout } = await run(process.execPath, [BIN, 'ingest', '--json', path], { env })
    expect(JSON.parse(stdout)[0]).toMatchObject({ outcome: 'ingested', rows: 20500, new: 20000, seen: 0, duplicate: 500, error: 0 })
    expect((await w.t.db.query('SELECT count(*) AS n FROM lab_rows'))[0].n).toBe(20000)
    expect((await w.t.db.query('SELECT count(*) AS n FROM lab_row_keys'))[0].n).toBe(20000)
    // Done, its claim cleared: the attempt the dead worker's lease cost is forgotten with success.
    expect(await w.t.db.query('SELECT state, outcome, claimed_by, attempts, failed_at FROM inbox_files'))
      .toEqual([{ state: 'done', outcome: 'ingested', claimed_by: null, attempts: 0, failed_at: null }])
  })
})
