/**
 * Hosts a set of engines in one process: each loops discover → claim → process, sleeping when it
 * finds nothing. `untilIdle` returns once every engine found no work in the same round (for
 * scheduled jobs and scripts). Aborting the signal stops claiming, lets the item in hand finish
 * (an engine may stop early at a safe point), and releases the rest of the batch.
 */
import { setTimeout as sleep } from 'node:timers/promises'
import type { Db } from '../db/types.ts'
import { errorText, type Logger } from '../log.ts'
import { Counters, type AnyEngine, type BatchEngine, type Engine } from './engine.ts'

export interface RunOptions {
  untilIdle?: boolean
  pollIntervalMs: number
  signal: AbortSignal
  counters?: Counters
  log: Logger
}

/** Runs one claim-and-process round; returns how many items it claimed. */
export async function runOnce<Item>(db: Db, engine: Engine<Item> | BatchEngine, opts: Omit<RunOptions, 'pollIntervalMs' | 'untilIdle'>): Promise<number> {
  const counters = opts.counters ?? new Counters()
  if ('step' in engine) {
    const outcomes = await engine.step(db, opts.signal)
    let n = 0
    for (const [outcome, count] of Object.entries(outcomes)) {
      counters.add(engine.name, outcome, count)
      n += count
    }
    return n
  }
  if (engine.discover) await engine.discover(db)
  const items = await engine.claim(db, engine.batchSize)
  for (let i = 0; i < items.length; i++) {
    if (opts.signal.aborted) {
      await engine.release(db, items.slice(i))
      break
    }
    try {
      counters.add(engine.name, await engine.process(db, items[i], opts.signal))
    } catch (err) {
      counters.add(engine.name, 'crashed')
      opts.log.error({ engine: engine.name, err: errorText(err) }, 'engine item failed')
    }
  }
  return items.length
}

export async function runEngines(db: Db, engines: AnyEngine[], opts: RunOptions): Promise<void> {
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
