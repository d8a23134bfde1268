import { describe, expect, it } from 'vitest'
import { setTimeout as sleep } from 'node:timers/promises'
import type { Db } from '../../src/db/types.ts'
import type { Engine } from '../../src/engine/engine.ts'
import { runEngines } from '../../src/engine/runner.ts'
import { createLogger } from '../../src/log.ts'

/** An engine that takes items from `from`, spends `ms` on them, and hands them to `to`. */
function stage(name: string, from: { n: number }, to: { n: number }, ms: number): Engine {
  return {
    name,
    batchSize: 1,
    async step(): Promise<Record<string, number>> {
      if (from.n === 0) return {}
      const n = from.n
      from.n = 0
      await sleep(ms)
      to.n += n
      return { moved: n }
    },
  }
}

describe('runEngines untilIdle', () => {
  it('runs a pipeline to its end: an engine idle while the one before it works is woken by that work', async () => {
    // The middle stage is slow: while it works, the first has finished and the last has found
    // nothing, and neither may take that for the end of the run.
    const marks = { n: 3 }
    const pending = { n: 0 }
    const checked = { n: 0 }
    const issued = { n: 0 }
    await runEngines({} as Db, [stage('intake', marks, pending, 20), stage('check', pending, checked, 300), stage('issue', checked, issued, 20)], {
      untilIdle: true, pollIntervalMs: 100, signal: new AbortController().signal, log: createLogger('silent'),
    })
    expect({ marks: marks.n, pending: pending.n, checked: checked.n, issued: issued.n }).toEqual({ marks: 0, pending: 0, checked: 0, issued: 3 })
  })
})
