import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { Db } from '../../src/db/types.ts'
import { Counters } from '../../src/engine/engine.ts'
import { runEngines } from '../../src/engine/runner.ts'
import { ingestEngine } from '../../src/ingest/index.ts'
import { loadConfig } from '../../src/config.ts'
import { createLogger } from '../../src/log.ts'
import { createTestDb, onPostgres, TEST_SECRET_KEY, type TestDb } from '../helpers/db.ts'
import { exportText, row, tempDir, writeExport } from '../helpers/files.ts'

let t: TestDb
beforeAll(async () => {
  if (onPostgres) t = await createTestDb()
})
afterAll(async () => t?.drop())

describe.runIf(onPostgres)('two ingest workers on one inbox (PostgreSQL)', () => {
  it('process each file once, and every row is counted once', async () => {
    const { dir, cleanup } = tempDir()
    const shared = Array.from({ length: 300 }, () => row(3))
    // Six files; each repeats rows of the shared set, so the workers also race on row identity.
    for (let f = 0; f < 6; f++) {
      const own = Array.from({ length: 200 }, () => row(3))
      writeExport(dir, `export-${f}.txt`, exportText(3, [...shared.slice(f * 20, f * 20 + 150), ...own]))
    }
    const second: Db = t.connectAgain()
    const run = (db: Db, worker: string) => {
      const config = loadConfig({ DATABASE_URL: t.url, HERALD_SECRET_KEY: TEST_SECRET_KEY, HERALD_INBOX: dir, HERALD_WORKER_ID: worker, HERALD_INGEST_BATCH_ROWS: '50', HERALD_POLL_INTERVAL_MS: '100' })
      const counters = new Counters()
      const log = createLogger('silent')
      // Files in a test folder are fresh: skip the settle delay by polling after it passes.
      return runEngines(db, [ingestEngine(config, log)], { untilIdle: true, pollIntervalMs: 100, signal: new AbortController().signal, counters, log })
        .then(() => counters.get('ingest', 'ingested'))
    }
    await new Promise((r) => setTimeout(r, 2100)) // let the files settle (see SETTLE_MS)
    const [a, b] = await Promise.all([run(t.db, 'worker-a'), run(second, 'worker-b')])
    expect(a + b).toBe(6)
    const files = await t.db.query('SELECT total_rows, new_rows, seen_rows, duplicate_rows, error_rows FROM files')
    expect(files).toHaveLength(6)
    const sum = (k: string) => files.reduce((s, f) => s + f[k], 0)
    expect(sum('total_rows')).toBe(6 * 350)
    // Each distinct row is new exactly once, whichever worker met it first.
    const distinct = new Set([...shared.slice(0, 250).map((r) => r.join('|'))]).size + 6 * 200
    expect(sum('new_rows')).toBe(distinct)
    expect(sum('seen_rows')).toBe(6 * 350 - distinct)
    expect((await t.db.query('SELECT count(*) AS n FROM lab_rows'))[0].n).toBe(distinct)
    const inbox = await t.db.query(`SELECT state, attempts, claimed_by FROM inbox_files`)
    expect(inbox.every((i) => i.state === 'done' && i.attempts === 0 && i.claimed_by === null)).toBe(true)
    cleanup()
  })
})
