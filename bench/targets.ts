/**
 * Where a benchmark phase runs: `pglite:FOLDER`, or the name of a database on the PostgreSQL
 * server of DATABASE_URL (default the local one), which the benchmark creates and drops.
 */
import { statSync } from 'node:fs'
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
