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

describe('runEngines failures', () => {
  const opts = () => ({ untilIdle: true, pollIntervalMs: 100, signal: new AbortController().signal, log: createLogger('silent') })
  /** An engine whose rounds answer `rounds` in turn, then find nothing. */
  const scripted = (name: string, rounds: (Record<string, number> | Error)[]): Engine => ({
    name,
    batchSize: 1,
    async step() {
      const r = rounds.shift() ?? {}
      if (r instanceof Error) throw r
      return r
    },
  })

  it('returns the engines whose round threw or whose work failed, and nothing for a clean run', async () => {
    expect(await runEngines({} as Db, [scripted('clean', [{ done: 2 }])], opts())).toEqual(new Map())
    const failures = await runEngines({} as Db, [
      scripted('casesync-in', [{ new_person: 1, poll_failed: 2 }, { poll_failed: 1 }]),
      scripted('link', [new Error('database went away')]),
      scripted('ingest', [{ ingested: 1 }]),
    ], opts())
    expect(failures).toEqual(new Map([['casesync-in', { rounds: 0, items: 3 }], ['link', { rounds: 1, items: 0 }]]))
  })

  it('ends an --until-idle run whose only work keeps failing: a failed poll is not progress', async () => {
    let rounds = 0
    const failing: Engine = { name: 'casesync-in', batchSize: 1, async step() { rounds++; return { poll_failed: 1 } } }
    const failures = await runEngines({} as Db, [failing], opts())
    expect(rounds).toBe(1)
    expect(failures.get('casesync-in')).toEqual({ rounds: 0, items: 1 })
  })
})
