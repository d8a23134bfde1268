/**
 * The launcher bin/herald.js runs (src/launch.ts): the heap cap per role, and a stand-in that is
 * transparent: the child's exit code and death by signal passed on, a stop signal delivered once,
 * even when it is sent to the launcher's whole process group (a terminal, `kill %1`).
 */
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { HEAP_MB, heapMb } from '../src/launch.ts'
import { tempDir } from './helpers/files.ts'

const tmp = tempDir()
afterAll(() => tmp.cleanup())

describe('heapMb', () => {
  it('gives each role its default and HERALD_HEAP_MB the last word', () => {
    expect(heapMb(['ingest', 'file.csv'], {})).toBe(256)
    expect(heapMb(['run', '--role', 'engines'], {})).toBe(256)
    expect(heapMb(['run', '--role=api'], {})).toBe(512)
    expect(heapMb(['run', '--role', 'all', '--until-idle'], {})).toBe(768)
    expect(heapMb(['run'], {})).toBe(HEAP_MB.all)
    expect(heapMb(['start'], {})).toBe(768)
    expect(heapMb(['start', '--role', 'engines'], {})).toBe(256)
    expect(heapMb(['start'], { HERALD_HEAP_MB: ' 1024 ' })).toBe(1024)
    expect(() => heapMb(['start'], { HERALD_HEAP_MB: '1g' })).toThrow('HERALD_HEAP_MB: must be a whole number of MB, at least 64, got "1g"')
    expect(() => heapMb(['start'], { HERALD_HEAP_MB: '10' })).toThrow(/at least 64/)
  })
})

// The child stands in for dist/cli.js: it prints its heap limit, counts the SIGTERMs it gets in
// 300 ms after the first, and exits with that count; or exits as its argument says.
const CHILD = join(tmp.dir, 'child.mjs')
writeFileSync(CHILD, `
import { getHeapStatistics } from 'node:v8'
const how = process.argv.at(-1)
let terms = 0
process.on('SIGTERM', () => { if (terms++ === 0) setTimeout(() => process.exit(10 + terms), 300) })
console.log(JSON.stringify({ heapMb: Math.round(getHeapStatistics().heap_size_limit / 2 ** 20), how }))
if (how === 'exit') process.exit(3)
if (how === 'kill') process.kill(process.pid, 'SIGKILL')
setInterval(() => {}, 1000)
`)
const LAUNCHER = join(tmp.dir, 'launcher.mjs')
writeFileSync(LAUNCHER, `
process.execArgv.length = 0 // the launcher passes its Node flags on: the child, plain JavaScript, needs no tsx
const { launch } = await import(${JSON.stringify(new URL('../src/launch.ts', import.meta.url).pathname)})
launch(${JSON.stringify(CHILD)}, process.argv.slice(2))
`)

/** Runs the launcher (through tsx) with ARGV; resolves on its exit. */
function launcher(argv: string[], env: NodeJS.ProcessEnv = {}) {
  const child = spawn(process.execPath, ['--import', 'tsx', LAUNCHER, ...argv], {
    env: { ...process.env, HERALD_HEAP_MB: '', ...env }, stdio: ['ignore', 'pipe', 'pipe'], detached: true })
  let out = ''
  let err = ''
  child.stdout!.on('data', (d) => (out += d))
  child.stderr!.on('data', (d) => (err += d))
  const started = new Promise<{ heapMb: number }>((resolve) => child.stdout!.on('data', () => out.includes('\n') && resolve(JSON.parse(out.split('\n')[0]))))
  const exited = once(child, 'exit').then(([code, signal]) => ({ code: code as number | null, signal: signal as string | null, err }))
  return { child, started, exited }
}

describe('launch', () => {
  it('starts Node with the heap cap of the role, or HERALD_HEAP_MB', async () => {
    const youngGeneration = new Set<number>()
    for (const [argv, env, mb] of [[['run', '--role', 'engines', 'exit'], {}, 256], [['start', 'exit'], {}, 768],
      [['run', '--role', 'api', 'exit'], { HERALD_HEAP_MB: '200' }, 200]] as const) {
      const { started, exited } = launcher([...argv], env)
      youngGeneration.add((await started).heapMb - mb)
      expect((await exited).code).toBe(3)
    }
    // V8's limit is the old space's cap plus the young generation's, a constant (48 MB on Node 20, 192 on 24).
    expect(youngGeneration.size).toBe(1)
    expect([...youngGeneration][0]).toBeGreaterThanOrEqual(0)
    expect([...youngGeneration][0]).toBeLessThan(256)
  })

  it('refuses a bad HERALD_HEAP_MB with exit 2, as any bad setting', async () => {
    const { exited } = launcher(['start', 'exit'], { HERALD_HEAP_MB: 'lots' })
    const { code, err } = await exited
    expect(code).toBe(2)
    expect(err).toMatch(/^herald: configuration error: HERALD_HEAP_MB: must be a whole number/)
  })

  it('dies of the signal that killed its child', async () => {
    const { exited } = launcher(['ingest', 'kill'])
    expect(await exited).toMatchObject({ code: null, signal: 'SIGKILL' })
  })

  it('delivers SIGTERM to `run` once, sent to the launcher or to its whole process group', async () => {
    for (const target of ['launcher', 'group'] as const) {
      const { child, started, exited } = launcher(['run', '--role', 'engines', 'wait'])
      await started
      process.kill(target === 'group' ? -child.pid! : child.pid!, 'SIGTERM')
      expect((await exited).code).toBe(11) // one SIGTERM, then the child's own exit
    }
  })
})

describe('bin/herald.js on the compiled CLI (dist/, made by npm install)', () => {
  it('takes its worker down with it when it is killed with SIGKILL, which it cannot pass on', { timeout: 60_000 }, async () => {
    const { execFileSync } = await import('node:child_process')
    const bin = new URL('../bin/herald.js', import.meta.url).pathname
    const env = { ...process.env, HERALD_FROM_SOURCE: '', DATABASE_URL: '', HERALD_DATA_DIR: join(tmp.dir, 'orphan') }
    const launcherProcess = spawn(process.execPath, [bin, 'run', '--role', 'engines'], { env, stdio: 'ignore' })
    const alive = (pid: number) => { try { process.kill(pid, 0); return true } catch { return false } }
    let worker = 0
    for (let i = 0; i < 100 && !worker; i++) {
      await new Promise((r) => setTimeout(r, 100))
      try {
        worker = Number(execFileSync('ps', ['-o', 'pid=', '--ppid', String(launcherProcess.pid)], { encoding: 'utf8' }).trim().split('\n')[0] || 0)
      } catch { /* ps exits 1 while there is no child yet */ }
    }
    expect(worker).toBeGreaterThan(0)
    await new Promise((r) => setTimeout(r, 1000)) // dead before or after the worker's CLI loaded: either way it must end
    launcherProcess.kill('SIGKILL')
    for (let i = 0; i < 100 && alive(worker); i++) await new Promise((r) => setTimeout(r, 100))
    expect(alive(worker)).toBe(false)
  })
})
