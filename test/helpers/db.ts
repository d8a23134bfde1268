/**
 * A migrated database for one test file: PGlite in memory by default, or, when DATABASE_URL is set,
 * a fresh database created on that server and dropped afterwards.
 */
import pg from 'pg'
import { randomBytes } from 'node:crypto'
import { migrate } from '../../src/db/migrate.ts'
import { PgliteDb } from '../../src/db/pglite.ts'
import { PostgresDb } from '../../src/db/postgres.ts'
import type { Db } from '../../src/db/types.ts'

export const onPostgres = Boolean(process.env.DATABASE_URL)

/**
 * The master secret of every Herald a test runs on PostgreSQL, where Herald refuses to start without
 * one (config.ts). Set in this process's environment too, so a child spawned with it (the kill tests'
 * `herald run`, env `{ ...process.env, … }`) has it; a config built from an env of its own must name it.
 */
export const TEST_SECRET_KEY = 'test-secret-key-test-secret-key-0123456789'
if (onPostgres) process.env.HERALD_SECRET_KEY ||= TEST_SECRET_KEY

export interface TestDb {
  db: Db
  /** Another independent connection to the same database (PostgreSQL only): a second worker. */
  connectAgain(): Db
  url?: string
  drop(): Promise<void>
}

/** A statement on the server's maintenance connection (CREATE/DROP DATABASE…). */
export async function admin<T>(fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const c = new pg.Client({ connectionString: process.env.DATABASE_URL })
  await c.connect()
  try {
    return await fn(c)
  } finally {
    await c.end()
  }
}

/** `prepare` replaces the migration (e.g. to build a database as an older Herald left it). */
export async function createTestDb(prepare: (db: Db) => Promise<unknown> = migrate): Promise<TestDb> {
  if (!onPostgres) {
    const db = await PgliteDb.open(undefined)
    await prepare(db)
    return { db, connectAgain: () => { throw new Error('PGlite admits one connection') }, drop: () => db.close() }
  }
  const base = new URL(process.env.DATABASE_URL!)
  const name = `${base.pathname.slice(1) || 'herald'}_t${randomBytes(4).toString('hex')}`
  await admin((c) => c.query(`CREATE DATABASE ${name}`))
  const url = new URL(base)
  url.pathname = `/${name}`
  const opened: Db[] = []
  const connectAgain = () => {
    const db = new PostgresDb('postgres', { connectionString: url.toString() })
    opened.push(db)
    return db
  }
  const db = connectAgain()
  await prepare(db)
  return {
    db, connectAgain, url: url.toString(),
    async drop() {
      for (const d of opened) await d.close()
      await admin((c) => c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`))
    },
  }
}
