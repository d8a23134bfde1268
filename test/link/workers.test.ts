import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { Db } from '../../src/db/types.ts'
import { linkBatch, prepareLocks } from '../../src/link/batch.ts'
import { linkOnce } from '../../src/link/index.ts'
import { createLogger } from '../../src/log.ts'
import { createTestDb, onPostgres, type TestDb } from '../helpers/db.ts'
import { exportText, row, tempDir, writeExport } from '../helpers/files.ts'
import { ingestPath } from '../helpers/ingest.ts'
import { count, linkAll, loadCounties } from '../helpers/link.ts'

let t: TestDb
beforeAll(async () => {
  if (onPostgres) t = await createTestDb()
})
afterAll(async () => t?.drop())

describe.runIf(onPostgres)('four link workers on rows of the same people (PostgreSQL)', () => {
  it('create each person, key, case and result once', async () => {
    const { dir, cleanup } = tempDir()
    // 40 people, 12 rows each under three patient keys (found by key, or by name and birth date,
    // which adds the key), in two counties; shuffled so that every batch holds rows of many people.
    const rows: string[][] = []
    for (let p = 0; p < 40; p++) {
      for (let r = 0; r < 12; r++) {
        rows.push(row(3, {
          PIDPATIENTKEY: `W${p}-${r % 3}`, PIDLASTNAME: `WORKER${p}`, PIDFIRSTNAME: r % 2 ? 'Anna Maria' : 'ANNA',
          PIDDATEOFBIRTH: `${String(1 + (p % 28)).padStart(2, '0')}JAN19${50 + p}:00:00:00.000000`,
          PIDCOUNTYCODE: r % 4 === 0 ? '3' : '1', OBRACCESSIONNUM: `W${p}-ACC${r % 6}`, MSHMESSAGEMASTERKEY: `W${p}-${r}`,
        }))
      }
    }
    let seed = 7
    const rand = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31)
    for (let i = rows.length - 1; i > 0; i--) {
      const j = Math.floor(rand() * (i + 1))
      ;[rows[i], rows[j]] = [rows[j], rows[i]]
    }
    await loadCounties(t.db)
    await ingestPath(t.db, writeExport(dir, 'export.txt', exportText(3, rows)))
    cleanup()

    const workers: Db[] = [t.db, t.connectAgain(), t.connectAgain(), t.connectAgain()]
    const results = await Promise.all(workers.map((db) => linkAll(db, 7)))
    expect(results.reduce((s, r) => s + (r.linked ?? 0) + (r.no_new_information ?? 0), 0)).toBe(480)
    expect(results.every((r) => (r.linked ?? 0) > 0)).toBe(true) // all four took part

    expect(await count(t.db, 'people')).toBe(40)
    expect(await count(t.db, 'person_keys')).toBe(120)
    // Per person: one case in each county; the accessions of each county's rows once per case.
    expect(await count(t.db, 'index_cases')).toBe(80)
    const perCase = await t.db.query(`SELECT c.county_fips, count(*)::int AS n FROM lab_results r JOIN index_cases c ON c.id = r.index_case_id
      GROUP BY c.id ORDER BY 1, 2`)
    expect(perCase.filter((c) => c.county_fips === 3).every((c) => c.n === 3)).toBe(true) // r = 0, 4, 8 → ACC0, ACC4, ACC2
    expect(perCase.filter((c) => c.county_fips === 1).every((c) => c.n === 6)).toBe(true)
    // Every row decided exactly once.
    expect(await count(t.db, 'link_queue')).toBe(0)
    const decided = await t.db.query(`SELECT count(DISTINCT lab_row_id)::int AS rows, count(*) FILTER (WHERE kind IN ('person_matched', 'person_created'))::int AS found
      FROM link_events`)
    expect(decided).toEqual([{ rows: 480, found: 480 }])
  })

  it('a batch with rows of a new person another batch holds defers them without waiting for it', { timeout: 30_000 }, async () => {
    const { dir, cleanup } = tempDir()
    // One new person, two rows: the first batch takes one, the second batch the other.
    const rows = [0, 1].map((r) => row(3, { PIDPATIENTKEY: 'NEW-1', PIDLASTNAME: 'WAITLESS', PIDFIRSTNAME: 'ADA',
      PIDDATEOFBIRTH: '02FEB1961:00:00:00.000000', PIDCOUNTYCODE: '1', OBRACCESSIONNUM: `NW-${r}`, MSHMESSAGEMASTERKEY: `NW-${r}` }))
    await ingestPath(t.db, writeExport(dir, 'new.txt', exportText(3, rows)))
    cleanup()
    const other = t.connectAgain()
    // Worker A, as linkOnce runs a batch: the keys first, then the batch's transaction, held open.
    await prepareLocks(t.db, 1)
    let release!: () => void
    const held = new Promise<void>((r) => (release = r))
    let holding!: () => void
    const holds = new Promise<void>((r) => (holding = r))
    const a = t.db.transaction(async (tx) => {
      const result = await linkBatch(tx, 1)
      holding()
      await held
      return result
    })
    await holds
    // Worker B meanwhile: its row's keys are A's, committed and locked: deferred at once. Had A inserted
    // them in its transaction, B's insert of the same keys would wait for A to commit.
    const b = await Promise.race([linkOnce(other, 10, createLogger('silent')), new Promise((r) => setTimeout(() => r('waited'), 10_000))])
    release()
    expect((await a).outcomes.size).toBe(1)
    expect(b).toEqual({ deferred: 1 })
    expect(await linkAll(other)).toMatchObject({ linked: 1 })
    expect(await count(t.db, 'people', "match_last = 'WAITLESS'")).toBe(1)
  })
})
