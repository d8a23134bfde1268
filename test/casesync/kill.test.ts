/**
 * A real crash: `herald run --engines casesync-out` is killed with SIGKILL while forms are in flight
 * and posted forms are not yet recorded, then run again: every case is in CommCare once, none twice.
 * PostgreSQL only: PGlite keeps its database inside the process that was killed.
 */
import { describe, expect, it } from 'vitest'
import { spawn, execFile } from 'node:child_process'
import { promisify } from 'node:util'
import { join } from 'node:path'
import { labResults, linkRows, patients, startSandbox } from '../helpers/casesync.ts'
import { onPostgres } from '../helpers/db.ts'
import { BIN, processWorld } from '../helpers/kill.ts'
import { row } from '../helpers/files.ts'
import { count, loadCounties } from '../helpers/link.ts'

const run = promisify(execFile)
const CASES = 300
const w = processWorld()
const { tmp } = w

describe.runIf(onPostgres)('a case sync worker killed mid-run (PostgreSQL)', () => {
  it('posts every case again that it had not recorded, and CommCare holds each once', async () => {
    await loadCounties(w.t.db)
    await linkRows(w.t.db, tmp.dir, Array.from({ length: CASES }, (_, i) => row(3, { PIDPATIENTKEY: `KILL-${i}`, PIDCOUNTYCODE: '1' })))
    const sandbox = await startSandbox({ latencyMs: 30 })
    const env = { ...process.env, DATABASE_URL: w.t.url, HERALD_LOG_LEVEL: 'silent', HERALD_POLL_INTERVAL_MS: '100',
      HERALD_COMMCARE_URL: sandbox.url, HERALD_COMMCARE_USER: 'herald', HERALD_COMMCARE_API_KEY: 'sandbox',
      HERALD_COMMCARE_ROOT_DOMAIN: 'ny-covid', HERALD_COMMCARE_CONCURRENCY: '8',
      HERALD_INBOX: join(tmp.dir, 'inbox'), HERALD_DATA_DIR: join(tmp.dir, '.herald') }
    const child = spawn(process.execPath, [BIN, 'run', '--engines', 'casesync-out'], { env, stdio: 'ignore' })
    for (let i = 0; i < 1000 && sandbox.stats.submissions < 100; i++) await new Promise((r) => setTimeout(r, 10))
    child.kill('SIGKILL')
    await new Promise((r) => child.on('exit', r))
    const recorded = await count(w.t.db, 'index_cases', 'synced_at IS NOT NULL')
    expect(patients(sandbox).length).toBeGreaterThan(recorded) // posted, never recorded: the crash window
    expect(await count(w.t.db, 'case_sync_queue')).toBeGreaterThan(0)

    // The killed worker's leases must run out before another takes its jobs.
    await w.t.db.query('UPDATE case_sync_queue SET claimed_until = now() WHERE claimed_until IS NOT NULL')
    await run(process.execPath, [BIN, 'run', '--engines', 'casesync-out', '--until-idle'], { env })
    expect(await count(w.t.db, 'case_sync_queue')).toBe(0)
    expect(await count(w.t.db, 'index_cases', 'synced_at IS NOT NULL')).toBe(CASES)
    const inCommCare = patients(sandbox)
    expect(inCommCare).toHaveLength(CASES)
    expect(new Set(inCommCare.map((p) => p.properties.external_id)).size).toBe(CASES)
    expect(labResults(sandbox)).toHaveLength(CASES)
  })
})
