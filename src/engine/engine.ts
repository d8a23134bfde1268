/**
 * The engine pattern every Herald engine follows. Engines never call each other: each has an inbox
 * (a query for rows in the state it looks for), claims a batch of them in one statement
 * (FOR UPDATE SKIP LOCKED, so any number of copies can run), processes each item, records the
 * item's outcome in the database, and counts it here for progress. On stop it finishes the item in
 * hand and gives back the rest of its batch.
 */
import type { Db } from '../db/types.ts'

export interface Engine<Item = unknown> {
  readonly name: string
  /** Looks for new work outside the database (an inbox folder); optional. */
  discover?(db: Db): Promise<void>
  /** Claims up to `limit` items in one statement. */
  claim(db: Db, limit: number): Promise<Item[]>
  /** Processes one item and records its outcome; returns the outcome's name for the counters. */
  process(db: Db, item: Item, signal: AbortSignal): Promise<string>
  /** Gives back claimed items that were not processed. */
  release(db: Db, items: Item[]): Promise<void>
  readonly batchSize: number
}

/**
 * An engine whose claim lives inside the transaction that does the work (link): the claimed rows
 * stay locked, skipped by other workers, until it commits, and a crash gives them back by rolling
 * back. No lease, no release. `step` claims and processes one batch; it returns how many items it
 * took, by outcome (empty: nothing to do).
 */
export interface BatchEngine {
  readonly name: string
  readonly batchSize: number
  step(db: Db, signal: AbortSignal): Promise<Record<string, number>>
}

export type AnyEngine = Engine<any> | BatchEngine

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
