/** Opens Herald's database as configured: PostgreSQL when DATABASE_URL is set, else the embedded PGlite. */
import type { Config } from '../config.ts'
import { PostgresDb } from './postgres.ts'
import type { Db } from './types.ts'

export async function connect(config: Config, opts: { serve?: boolean } = {}): Promise<Db> {
  if (config.databaseUrl) return new PostgresDb('postgres', { connectionString: config.databaseUrl, max: config.dbPool })
  // PGlite loads only when it is used: a command on PostgreSQL need not carry it.
  const { openEmbedded } = await import('./embedded.ts')
  return openEmbedded(config.dataDir, opts)
}

/** The read replica reports read from (HERALD_REPORTS_DATABASE_URL), else the database itself. Never migrated: the primary is. */
export function reportsDb(config: Config, db: Db): { db: Db; close: () => Promise<void> } {
  if (!config.reportsDatabaseUrl) return { db, close: async () => {} }
  const replica = new PostgresDb('postgres', { connectionString: config.reportsDatabaseUrl, max: 4 })
  return { db: replica, close: () => replica.close() }
}

export function describeDb(db: Db, config: Config): string {
  if (db.kind === 'postgres') return `PostgreSQL ${new URL(config.databaseUrl!).host}${new URL(config.databaseUrl!).pathname}`
  return `PGlite in ${config.dataDir}/pgdata${db.kind === 'pglite-server' ? ' (through the running herald)' : ''}`
}
