/**
 * The engine pattern every Herald engine follows. Engines never call each other: each takes work
 * from its own queue through the one work-queue primitive (queue.ts: claim with a lease or inside a
 * transaction, hold before an effect outside, finish, fail with backoff, release), records each
 * item's outcome in the database, and counts it here for progress.
 */
import type { Db } from '../db/types.ts'

/**
 * An engine: `step` claims and processes one round of work and returns how many items it took, by
 * outcome (empty: nothing to do). When `signal` aborts, it stops at its next batch boundary and
 * releases what it claimed and did not start.
 */
export interface Engine {
  readonly name: string
  readonly batchSize: number
  step(db: Db, signal: AbortSignal): Promise<Record<string, number>>
}

/** Per engine, per outcome: how many items, since this process started. Read by progress lines and /metrics. */
export class Counters {
  private readonly counts = new Map<string, Map<string, number>>()

  add(engine: string, outcome: string, n = 1) {
    const byOutcome = this.counts.get(engine) ?? new Map<string, number>()
    byOutcome.set(outcome, (byOutcome.get(outcome) ?? 0) + n)
    this.counts.set(engine, byOutcome)
  }

  get(engine: string, outcome: string): number {
    return this.counts.get(engine)?.get(outcome) ?? 0
  }

  snapshot(): Record<string, Record<string, number>> {
    return Object.fromEntries([...this.counts].map(([e, m]) => [e, Object.fromEntries(m)]))
  }

  /** Prometheus text exposition. */
  prometheus(): string {
    const lines = ['# TYPE herald_engine_items_total counter']
    for (const [engine, m] of this.counts) {
      for (const [outcome, n] of m) lines.push(`herald_engine_items_total{engine="${engine}",outcome="${outcome}"} ${n}`)
    }
    return lines.join('\n') + '\n'
  }
}
