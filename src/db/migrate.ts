/**
 * Forward-only numbered migrations: src/db/migrations/NNN_name.sql, each applied once in its own
 * transaction. A transaction-scoped advisory lock makes concurrent starts apply each one exactly once.
 */
import { readdirSync, readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import type { Db } from './types.ts'

const DIR = fileURLToPath(new URL('./migrations/', import.meta.url))
// Any constant shared by every Herald process; "herald" in ASCII.
const MIGRATION_LOCK = 0x68657261

export interface Migration {
  version: number
  name: string
  sql: string
}

// Read once per process: the files are part of the release, and /readyz asks on every probe.
let read: Migration[] | undefined

export function migrations(): Migration[] {
  read ??= readdirSync(DIR)
    .filter((f) => /^\d+_.+\.sql$/.test(f))
    .sort()
    .map((f) => ({ version: Number.parseInt(f, 10), name: f.replace(/\.sql$/, ''), sql: readFileSync(DIR + f, 'utf8') }))
  return read
}

/** Applies what is missing; returns the names applied. */
export async function migrate(db: Db): Promise<string[]> {
  await db.exec(`CREATE TABLE IF NOT EXISTS schema_migrations (
    version int PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`)
  const applied: string[] = []
  for (const m of migrations()) {
    const done = await db.transaction(async (tx) => {
      // Held to the end of this transaction: a second process waits here, then sees the row and skips.
      await tx.query('SELECT pg_advisory_xact_lock($1)', [MIGRATION_LOCK])
      const [row] = await tx.query('SELECT 1 FROM schema_migrations WHERE version = $1', [m.version])
      if (row) return false
      await tx.exec(m.sql)
      await tx.query('INSERT INTO schema_migrations (version, name) VALUES ($1, $2)', [m.version, m.name])
      return true
    })
    if (done) applied.push(m.name)
  }
  return applied
}

/** The migrations not applied to this database, read only (a replica, a process that must not migrate, /readyz). */
export async function pendingMigrations(db: Pick<Db, 'query'>): Promise<string[]> {
  const [table] = await db.query<{ t: string | null }>("SELECT to_regclass('schema_migrations')::text AS t")
  const done = new Set(table?.t ? (await db.query<{ version: number }>('SELECT version FROM schema_migrations')).map((r) => r.version) : [])
  return migrations().filter((m) => !done.has(m.version)).map((m) => m.name)
}
