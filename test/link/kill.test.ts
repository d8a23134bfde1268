/**
 * A real crash: `herald run --engines link` is killed with SIGKILL between and inside batches, then
 * run again; the records and events equal those of a run that was never interrupted.
 * PostgreSQL only: PGlite keeps its database inside the process that was killed.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { spawn, execFile } from 'node:child_process'
import { promisify } from 'node:util'
import { join } from 'node:path'
import { generateEclrs } from '../../src/ingest/generate.ts'
import { createTestDb, onPostgres, type TestDb } from '../helpers/db.ts'
import { tempDir } from '../helpers/files.ts'
import { ingestPath } from '../helpers/ingest.ts'
import { count, linkAll, loadCounties, snapshot } from '../helpers/link.ts'

const run = promisify(execFile)
const BIN = new URL('../../bin/herald.js', import.meta.url).pathname
let killed: TestDb
let clean: TestDb
const tmp = tempDir()
beforeAll(async () => {
  if (onPostgres) [killed, clean] = [await createTestDb(), await createTestDb()]
})
afterAll(async () => {
  await killed?.drop()
  await clean?.drop()
  tmp.cleanup()
})

describe.runIf(onPostgres)('a link worker killed mid-run (PostgreSQL)', () => {
  it('loses nothing and repeats nothing: the rerun ends where an uninterrupted run does', { timeout: 180_000 }, async () => {
    // 12,000 rows of 5,000 recurring people: most batches create people and find them again.
    const path = join(tmp.dir, 'export.txt')
    await generateEclrs({ rows: 12000, version: 3, out: path, seed: 5, people: { ranges: [{ from: 0, to: 5000, weight: 1 }], otherKeyFraction: 0.1, otherCountyFraction: 0.1 } })
    for (const t of [killed, clean]) {
      await loadCounties(t.db)
      await ingestPath(t.db, path, { batchRows: 5000 })
    }
    const env = { ...process.env, DATABASE_URL: killed.url, HERALD_LINK_BATCH_ROWS: '500', HERALD_LOG_LEVEL: 'silent',
      HERALD_POLL_INTERVAL_MS: '100', HERALD_INBOX: join(tmp.dir, 'inbox'), HERALD_DATA_DIR: join(tmp.dir, '.herald') }
    const child = spawn(process.execPath, [BIN, 'run', '--engines', 'link'], { env, stdio: 'ignore' })
    let waiting = 12000
    for (let i = 0; i < 600 && waiting > 8000; i++) {
      await new Promise((r) => setTimeout(r, 20))
      waiting = await count(killed.db, 'link_queue')
    }
    child.kill('SIGKILL')
    await new Promise((r) => child.on('exit', r))
    const left = await count(killed.db, 'link_queue')
    expect(left).toBeGreaterThan(0)
    expect(left).toBeLessThan(12000)

    await run(process.execPath, [BIN, 'run', '--engines', 'link', '--until-idle'], { env })
    await linkAll(clean.db, 500)
    const [a, b] = [await snapshot(killed.db), await snapshot(clean.db)]
    expect(await count(killed.db, 'link_queue')).toBe(0)
    expect(a.people.length).toBeGreaterThan(4000)
    expect(a).toEqual(b) // the same people, cases, results and data, and each decision recorded as often
  })
})
