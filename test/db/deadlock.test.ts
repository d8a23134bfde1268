import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import pg from 'pg'
import { createTestDb, onPostgres, type TestDb } from '../helpers/db.ts'

/**
 * Two statements locking the same rows in opposite orders deadlock, and PostgreSQL aborts one. A
 * statement Herald ran on its own is run again (its abort undid it); the other party's work stands.
 */
describe.runIf(onPostgres)('a statement chosen as a deadlock victim (PostgreSQL)', () => {
  let t: TestDb
  beforeAll(async () => {
    t = await createTestDb(async (db) => {
      await db.exec('CREATE TABLE pair (id int PRIMARY KEY, v int NOT NULL)')
      await db.exec('INSERT INTO pair VALUES (1, 0), (2, 0)')
    })
  })
  afterAll(() => t.drop())

  it('is run again once the other party has ended, and both updates stand', { timeout: 30_000 }, async () => {
    const other = new pg.Client({ connectionString: t.url })
    await other.connect()
    try {
      // The other party checks for deadlocks long after Herald's statement does (1 s by default), so
      // Herald's is the one PostgreSQL aborts.
      await other.query("SET deadlock_timeout = '20s'")
      await other.query('BEGIN')
      await other.query('UPDATE pair SET v = v + 10 WHERE id = 1')
      // Locks row 2, then waits for row 1.
      const herald = t.db.query(`DO $$ BEGIN
        UPDATE pair SET v = v + 1 WHERE id = 2;
        UPDATE pair SET v = v + 1 WHERE id = 1;
      END $$`)
      const waiting = async () => (await t.db.query(`SELECT count(*)::int AS n FROM pg_locks WHERE NOT granted AND locktype = 'transactionid'`))[0].n
      for (let i = 0; i < 100 && (await waiting()) === 0; i++) await new Promise((r) => setTimeout(r, 20))
      expect(await waiting()).toBe(1)
      // Now row 2: a cycle. Herald's statement is aborted, this one goes on, and commits.
      await other.query('UPDATE pair SET v = v + 10 WHERE id = 2')
      await other.query('COMMIT')
      await herald
    } finally {
      await other.end()
    }
    expect(await t.db.query('SELECT id, v FROM pair ORDER BY id')).toEqual([{ id: 1, v: 11 }, { id: 2, v: 11 }])
  })
})
