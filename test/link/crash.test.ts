import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { linkBatch } from '../../src/link/batch.ts'
import { retry } from '../../src/engine/queue.ts'
import { linkOnce } from '../../src/link/index.ts'
import { linkQueue } from '../../src/link/queue.ts'
import { traceRow } from '../../src/link/trace.ts'
import { createLogger } from '../../src/log.ts'
import { createTestDb, type TestDb } from '../helpers/db.ts'
import { exportText, row, tempDir, writeExport } from '../helpers/files.ts'
import { ingestPath } from '../helpers/ingest.ts'
import { count, linkAll, loadCounties, snapshot } from '../helpers/link.ts'

let crashed: TestDb
let clean: TestDb
const { dir, cleanup } = tempDir()

// Rows of a few people, several results each, two counties: later rows find what earlier ones made.
const rows = Array.from({ length: 60 }, (_, i) => row(3, {
  PIDPATIENTKEY: `CRASH-${i % 12}`, PIDLASTNAME: `CRASHPERSON${i % 12}`, PIDCOUNTYCODE: i % 5 === 0 ? '3' : '1',
  OBRACCESSIONNUM: i === 41 ? 'BOOM' : `CR-${i}`,
}))
const path = writeExport(dir, 'export.txt', exportText(3, rows))

// A failure inside the database while a batch is being written: the same effect as the process
// dying at that point (the transaction never commits), without a product hook.
const FAIL_ON_BOOM = `
  CREATE FUNCTION fail_on_boom() RETURNS trigger LANGUAGE plpgsql AS $$
  BEGIN IF NEW.accession_number = 'BOOM' THEN RAISE EXCEPTION 'simulated crash'; END IF; RETURN NEW; END $$;
  CREATE TRIGGER fail_on_boom BEFORE INSERT ON lab_results FOR EACH ROW EXECUTE FUNCTION fail_on_boom();`

beforeAll(async () => {
  ;[crashed, clean] = [await createTestDb(), await createTestDb()]
  for (const t of [crashed, clean]) {
    await loadCounties(t.db)
    await ingestPath(t.db, path)
  }
})
afterAll(async () => {
  await crashed.drop()
  await clean.drop()
  cleanup()
})

describe('a batch that dies part-way', () => {
  it('leaves nothing behind, and the rerun gives the same records and events as a run that never failed', async () => {
    const db = crashed.db
    await db.exec(FAIL_ON_BOOM)
    // First batch commits; the second (rows 21–40) too; the third dies after writing people and cases.
    for (let i = 0; i < 2; i++) await db.transaction((tx) => linkBatch(tx, 20))
    const before = await snapshot(db)
    await expect(db.transaction((tx) => linkBatch(tx, 20))).rejects.toThrow()
    expect(await snapshot(db)).toEqual(before)
    expect(await count(db, 'link_queue')).toBe(20)

    await db.exec('DROP TRIGGER fail_on_boom ON lab_results')
    await linkAll(db, 20)
    await linkAll(clean.db, 60)
    const [a, b] = [await snapshot(db), await snapshot(clean.db)]
    expect(a.people).toHaveLength(12)
    expect(a.events.every((e) => e.n === 1)).toBe(true) // no decision recorded twice
    expect(a).toEqual(b)
  })

  it('a row that fails on its own is retried with backoff, fails for good, and is linked again after a retry', async () => {
    const t = await createTestDb()
    try {
      await loadCounties(t.db)
      await ingestPath(t.db, path)
      await t.db.exec(FAIL_ON_BOOM)
      const log = createLogger('silent')
      const error = 'database error P0001 (see PostgreSQL error codes)'
      expect(await linkOnce(t.db, 100, log)).toEqual({ linked: 59, failed: 1 })
      // The wait from the moment of the failure (its event, written by the same statement), not from this read.
      const [q] = await t.db.query(`SELECT attempts, last_error, failed_at, extract(epoch FROM retry_at - e.at)::float8 AS wait
        FROM link_queue q JOIN queue_events e ON e.engine = 'link' AND e.item = q.lab_row_id::text AND e.kind = 'retrying'`)
      expect(q).toMatchObject({ attempts: 1, last_error: error, failed_at: null })
      expect(q.wait).toBeGreaterThan(26.9) // 30 s ± 10%, computed in SQL by the spec
      expect(q.wait).toBeLessThan(33.1)
      // Until its retry time, nothing is claimed; after the last attempt it stays, failed, with a failed event.
      expect(await linkOnce(t.db, 100, log)).toEqual({})
      for (let i = 2; i <= linkQueue.retry.maxAttempts; i++) {
        await t.db.query('UPDATE link_queue SET retry_at = now()')
        expect(await linkOnce(t.db, 100, log)).toEqual({ failed: 1 })
      }
      const [dead] = await t.db.query('SELECT attempts, failed_at IS NOT NULL AS failed, retry_at FROM link_queue')
      expect(dead).toEqual({ attempts: 5, failed: true, retry_at: null })
      expect(await linkOnce(t.db, 100, log)).toEqual({})
      expect(await t.db.query(`SELECT kind, detail FROM link_events WHERE kind = 'failed'`))
        .toEqual([{ kind: 'failed', detail: { error, attempts: 5 } }])
      expect((await t.db.query(`SELECT kind FROM queue_events WHERE engine = 'link' ORDER BY id`)).map((e) => e.kind))
        .toEqual(['retrying', 'retrying', 'retrying', 'retrying', 'failed'])

      // herald link --retry: due again with its attempts anew, and linked once the cause is gone.
      await t.db.exec('DROP TRIGGER fail_on_boom ON lab_results')
      expect(await retry(t.db, linkQueue)).toHaveLength(1)
      expect(await linkOnce(t.db, 100, log)).toEqual({ linked: 1 })
      expect(await count(t.db, 'link_queue')).toBe(0)
      // Its trail keeps the failure, then the decisions of the batch that linked it.
      const [{ lab_row_id: id }] = await t.db.query(`SELECT lab_row_id FROM link_events WHERE kind = 'failed'`)
      const trace = (await traceRow(t.db, id))!
      expect(trace.state).toBe('linked')
      expect(trace.events.map((e) => e.kind)).toEqual(['failed', 'person_matched', 'lab_result_created'])
    } finally {
      await t.drop()
    }
  })

  it('stops between the rows of a failed batch when asked, leaving the rest due and no attempt spent', async () => {
    const t = await createTestDb()
    try {
      await loadCounties(t.db)
      await ingestPath(t.db, path)
      await t.db.exec(FAIL_ON_BOOM)
      const stop = new AbortController()
      stop.abort()
      expect(await linkOnce(t.db, 100, createLogger('silent'), stop.signal)).toEqual({})
      expect(await count(t.db, 'link_queue', 'attempts = 0 AND retry_at IS NULL AND failed_at IS NULL')).toBe(60)
    } finally {
      await t.drop()
    }
  })
})
