/**
 * Health for a load balancer or an orchestrator. GET /healthz: the process is up. GET /readyz: it can
 * do its work now: the database answers within a short time, every migration of this release is
 * applied, each engine's loop has come round lately, and it is not stopping. Served by the HTTP server
 * and, for a process without one (`--role engines`), on the metrics port. No auth, no log line per
 * request, and no detail from the database in the answer (an error's text may name a host or a user).
 */
import { pendingMigrations } from '../db/migrate.ts'
import type { Queryable } from '../db/types.ts'
import type { EngineLoops } from '../engine/runner.ts'

export interface Readiness {
  status: 'ok' | 'unavailable' | 'draining'
  /** Each check: "ok" or why not. */
  checks: Record<string, string>
  /** The checks that failed. */
  failing?: string[]
}

export interface HealthOptions {
  /** The engines this process runs; absent: none (an API process). */
  loops?: EngineLoops
  /** An engine whose loop has not come round for this long is stalled. */
  stallMs: number
  /** How long the database has to answer. */
  dbTimeoutMs?: number
}

export class Health {
  /** Set as a stop begins: /readyz answers 503 so the load balancer sends no more. */
  draining = false
  // One database check at a time: probes of a hung database must not take every pooled connection.
  private inFlight?: Promise<Record<string, string>>

  constructor(private readonly db: Queryable, private readonly opts: HealthOptions) {}

  async ready(): Promise<Readiness> {
    if (this.draining) return { status: 'draining', checks: { draining: 'the process is stopping' }, failing: ['draining'] }
    const checks = { ...(await (this.inFlight ??= this.database().finally(() => (this.inFlight = undefined)))) }
    const loops = this.opts.loops
    if (loops) {
      const stalled = loops.stalled(this.opts.stallMs)
      checks.engines = stalled.length === 0 ? 'ok'
        : `not running: ${stalled.map((s) => (s.seconds === null ? `${s.engine} (not started)` : `${s.engine} (last seen ${s.seconds} s ago)`)).join(', ')}`
    }
    const failing = Object.keys(checks).filter((k) => checks[k] !== 'ok')
    return failing.length ? { status: 'unavailable', checks, failing } : { status: 'ok', checks }
  }

  private async database(): Promise<Record<string, string>> {
    const ms = this.opts.dbTimeoutMs ?? 2000
    let timer: NodeJS.Timeout | undefined
    const late = new Promise<'late'>((resolve) => (timer = setTimeout(() => resolve('late'), ms)))
    try {
      const pending = await Promise.race([pendingMigrations(this.db), late])
      if (pending === 'late') return { database: `no answer within ${ms} ms`, migrations: 'not checked' }
      return { database: 'ok', migrations: pending.length === 0 ? 'ok' : `${pending.length} pending: ${pending.join(', ')}` }
    } catch {
      return { database: 'unreachable', migrations: 'not checked' }
    } finally {
      clearTimeout(timer)
    }
  }
}

/** The answer to GET /readyz: 200 when ready, else 503, with each check. */
export async function readyAnswer(health: Health): Promise<{ code: number; body: Readiness }> {
  const body = await health.ready()
  return { code: body.status === 'ok' ? 200 : 503, body }
}

export const HEALTHZ = { status: 'ok' } as const
