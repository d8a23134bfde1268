/** What every command needs: the config, a logger, and the database opened and migrated. */
import { loadConfig, type Config } from '../config.ts'
import { connect } from '../db/connect.ts'
import { migrate, pendingMigrations } from '../db/migrate.ts'
import type { Db } from '../db/types.ts'
import { createLogger, type Logger } from '../log.ts'

export interface Context {
  config: Config
  log: Logger
  db: Db
}

/**
 * `migrating`: this is `herald migrate`, which applies what is pending itself whatever
 * HERALD_AUTO_MIGRATE says. With HERALD_AUTO_MIGRATE=off (a fleet: one release step migrates, docs/operations.md) every
 * other command refuses to run behind the schema rather than apply a migration from N processes at once.
 */
export async function withDb<T>(fn: (ctx: Context) => Promise<T>, opts: { serve?: boolean; migrating?: boolean } = {}): Promise<T> {
  const config = loadConfig()
  const log = createLogger(config.logLevel)
  const db = await connect(config, opts)
  try {
    // `herald migrate` applies what is pending itself, and says what it applied.
    if (!opts.migrating && config.autoMigrate) await migrate(db)
    if (!opts.migrating && !config.autoMigrate) {
      const pending = await pendingMigrations(db)
      if (pending.length) throw new Error(`the database is behind this release: ${pending.length} migration(s) pending (${pending.join(', ')}); run herald migrate first`)
    }
    return await fn({ config, log, db })
  } finally {
    await db.close()
  }
}

/** An AbortSignal that fires on SIGINT/SIGTERM; a second signal exits at once. */
export function stopSignal(log: Logger): AbortSignal {
  const controller = new AbortController()
  const stop = (sig: string) => {
    if (controller.signal.aborted) process.exit(130)
    log.info({ signal: sig }, 'stopping: finishing the work in hand (signal again to quit now)')
    controller.abort()
  }
  process.once('SIGINT', () => stop('SIGINT'))
  process.once('SIGTERM', () => stop('SIGTERM'))
  return controller.signal
}

export function table(rows: Record<string, unknown>[]): string {
  if (rows.length === 0) return '(none)'
  const cols = Object.keys(rows[0])
  const width = cols.map((c) => Math.max(c.length, ...rows.map((r) => String(r[c] ?? '').length)))
  const line = (vals: string[]) => vals.map((v, i) => v.padEnd(width[i])).join('  ').trimEnd()
  return [line(cols), ...rows.map((r) => line(cols.map((c) => String(r[c] ?? ''))))].join('\n')
}
