/**
 * Hosts a set of engines in one process: each runs round after round, sleeping when a round finds
 * nothing. `untilIdle` returns once every engine found no work in the same round (for scheduled jobs
 * and scripts). Aborting the signal stops every engine at its next batch boundary (each releases
 * what it did not start) and no new round begins.
 */
import { setTimeout as sleep } from 'node:timers/promises'
import type { Db } from '../db/types.ts'
import { errorText, type Logger } from '../log.ts'
import { Counters, type Engine } from './engine.ts'

export interface RunOptions {
  untilIdle?: boolean
  pollIntervalMs: number
  signal: AbortSignal
  counters?: Counters
  log: Logger
}

/** Runs one round of an engine; returns how many items it took. */
export async function runOnce(db: Db, engine: Engine, opts: Omit<RunOptions, 'pollIntervalMs' | 'untilIdle'>): Promise<number> {
  const counters = opts.counters ?? new Counters()
  const outcomes = await engine.step(db, opts.signal)
  let n = 0
  for (const [outcome, count] of Object.entries(outcomes)) {
    counters.add(engine.name, outcome, count)
    n += count
  }
  return n
}

export async function runEngines(db: Db, engines: Engine[], opts: RunOptions): Promise<void> {
  const idle = new Set<string>()
  await Promise.all(
    engines.map(async (engine) => {
      while (!opts.signal.aborted) {
        let claimed = 0
        idle.delete(engine.name) // busy until a round of its own finds nothing
        try {
          claimed = await runOnce(db, engine, opts)
        } catch (err) {
          opts.log.error({ engine: engine.name, err: errorText(err) }, 'engine round failed')
        }
        // Work done by one engine may be work for another (a pipeline): after it, every engine must
        // find nothing again before the run is idle.
        if (claimed > 0) idle.clear()
        else idle.add(engine.name)
        if (opts.untilIdle && engines.every((e) => idle.has(e.name))) return
        if (claimed === 0) await sleep(opts.untilIdle ? 50 : opts.pollIntervalMs, undefined, { signal: opts.signal }).catch(() => {})
      }
    }),
  )
}
