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
  /** Each loop's last sign of life, for /readyz. */
  loops?: EngineLoops
}

/**
 * When each engine's loop last came round (a round begun or ended, a sleep begun), and which loops
 * are still running: /readyz calls an engine stalled when its loop has not come round for a while
 * (a round stuck on a call that never returns), and a drain that runs out of time names the loops
 * that have not stopped.
 */
export class EngineLoops {
  private readonly seen = new Map<string, number>()
  readonly running = new Set<string>()

  constructor(readonly engines: string[]) {}

  mark(engine: string): void {
    this.seen.set(engine, Date.now())
  }

  /** Engines not heard from for longer than `maxAgeMs`, with how long (those not started yet: null). */
  stalled(maxAgeMs: number, now = Date.now()): { engine: string; seconds: number | null }[] {
    return this.engines.flatMap((engine): { engine: string; seconds: number | null }[] => {
      const at = this.seen.get(engine)
      if (at === undefined) return [{ engine, seconds: null }]
      return now - at > maxAgeMs ? [{ engine, seconds: Math.round((now - at) / 1000) }] : []
    })
  }
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
      opts.loops?.running.add(engine.name)
      try {
        await loop(engine)
      } finally {
        opts.loops?.running.delete(engine.name)
      }
    }),
  )
  return failures

  async function loop(engine: Engine) {
    while (!opts.signal.aborted) {
      opts.loops?.mark(engine.name)
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
      opts.loops?.mark(engine.name)
      if (claimed === 0) await sleep(opts.untilIdle ? 50 : opts.pollIntervalMs, undefined, { signal: opts.signal }).catch(() => {})
    }
  }
}
