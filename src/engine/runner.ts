/**
 * Hosts a set of engines in one process: each runs round after round, sleeping when a round finds
 * nothing. `untilIdle` returns once every engine found no work in the same round (for scheduled jobs
 * and scripts). Aborting the signal stops every engine at its next batch boundary (each releases
 * what it did not start) and no new round begins. It returns the engines whose work failed during
 * the run (a round threw, or reported a FAILED_OUTCOMES outcome), so a script can tell "nothing left
 * to do" from "nothing could be done".
 */
import { setTimeout as sleep } from 'node:timers/promises'
import type { Db } from '../db/types.ts'
import { errorText, type Logger } from '../log.ts'
import { Counters, type Engine } from './engine.ts'

/**
 * Outcomes that mean a round's work could not be done (casesync-in: a poll that failed, backed off
 * for a later round). They are not progress: an --until-idle run ends rather than retrying them.
 */
export const FAILED_OUTCOMES = new Set(['poll_failed'])

export interface RunOptions {
  untilIdle?: boolean
  pollIntervalMs: number
  signal: AbortSignal
  counters?: Counters
  log: Logger
}

/** Runs one round of an engine; returns how many items it took, and how many of those failed (FAILED_OUTCOMES). */
export async function runOnce(db: Db, engine: Engine, opts: Omit<RunOptions, 'pollIntervalMs' | 'untilIdle'>): Promise<{ taken: number; failed: number }> {
  const counters = opts.counters ?? new Counters()
  const outcomes = await engine.step(db, opts.signal)
  let taken = 0
  let failed = 0
  for (const [outcome, count] of Object.entries(outcomes)) {
    counters.add(engine.name, outcome, count)
    taken += count
    if (FAILED_OUTCOMES.has(outcome)) failed += count
  }
  return { taken, failed }
}

/** What failed during a run, by engine: rounds that threw, and items with a FAILED_OUTCOMES outcome. */
export type RunFailures = Map<string, { rounds: number; items: number }>

export async function runEngines(db: Db, engines: Engine[], opts: RunOptions): Promise<RunFailures> {
  const idle = new Set<string>()
  const failures: RunFailures = new Map()
  const note = (engine: string, rounds: number, items: number) => {
    const f = failures.get(engine) ?? { rounds: 0, items: 0 }
    failures.set(engine, { rounds: f.rounds + rounds, items: f.items + items })
  }
  await Promise.all(
    engines.map(async (engine) => {
      while (!opts.signal.aborted) {
        let claimed = 0
        idle.delete(engine.name) // busy until a round of its own finds nothing
        try {
          const r = await runOnce(db, engine, opts)
          claimed = r.taken - r.failed
          if (r.failed > 0) note(engine.name, 0, r.failed)
        } catch (err) {
          opts.log.error({ engine: engine.name, err: errorText(err) }, 'engine round failed')
          note(engine.name, 1, 0)
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
  return failures
}
