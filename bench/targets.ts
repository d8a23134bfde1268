/**
 * Where a benchmark phase runs: `pglite:FOLDER`, or the name of a database on the PostgreSQL
 * server of DATABASE_URL (default the local one), which the benchmark creates and drops.
 */
import { mkdirSync, rmSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import pg from 'pg'
import { PgliteDb } from '../src/db/pglite.ts'
import { PostgresDb } from '../src/db/postgres.ts'
import type { Db } from '../src/db/types.ts'
import { ingestFile } from '../src/ingest/file.ts'
import { claim, register } from '../src/ingest/inbox.ts'
import { LocalStore } from '../src/storage/local.ts'

export const server = process.env.DATABASE_URL || 'postgres://postgres@127.0.0.1:5432/postgres'

export function targetUrl(name: string): string {
  const url = new URL(server)
  url.pathname = `/${name}`
  return url.toString()
}

export async function open(target: string): Promise<Db> {
  if (target.startsWith('pglite:')) return PgliteDb.open(target.slice('pglite:'.length))
  return new PostgresDb('postgres', { connectionString: targetUrl(target), max: 2 })
}

/** A statement on the server's maintenance database: CREATE / DROP DATABASE. */
export async function admin(sql: string) {
  const c = new pg.Client({ connectionString: server })
  await c.connect()
  try {
    await c.query(sql)
  } finally {
    await c.end()
  }
}

/** Ingests one file as the engine does: registered, claimed, ingested in batches. */
export async function ingest(db: Db, file: string, batchRows = 10000) {
  const [id] = await register(db, [{ uri: file, size: statSync(file).size, modifiedAt: statSync(file).mtime }])
  const item = (await claim(db, 'bench', 600, [id]))!
  return ingestFile(db, new LocalStore(file), item, { workerId: 'bench', leaseSeconds: 600, batchRows })
}

/**
 * A fresh database for one benchmark run: on PostgreSQL a database created on DATABASE_URL's server
 * (its pool `pool` connections, as `herald start` opens 8), on PGlite a data folder under the system
 * temp folder. `drop()` removes it, whatever happened.
 */
export async function freshDb(kind: 'postgres' | 'pglite', label: string, pool: number): Promise<{ db: Db; drop(): Promise<void> }> {
  const name = `herald_bench_${label}_${process.pid}`
  if (kind === 'postgres') {
    await admin(`CREATE DATABASE ${name}`)
    const db = new PostgresDb('postgres', { connectionString: targetUrl(name), max: pool })
    return { db, drop: async () => {
      await db.close().catch(() => {})
      await admin(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`)
    } }
  }
  const folder = join(tmpdir(), 'herald-bench', `${label}-pglite-${process.pid}`)
  rmSync(folder, { recursive: true, force: true })
  mkdirSync(folder, { recursive: true })
  const db = await PgliteDb.open(folder)
  return { db, drop: async () => {
    await db.close().catch(() => {})
    rmSync(folder, { recursive: true, force: true })
  } }
}
