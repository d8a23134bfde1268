/**
 * Benchmarks run each outside system's sandbox as a process of its own, as the real service is
 * another machine: only Herald's work is in the benchmark's process (it shares the machine's cores,
 * though). Read through the sandbox's /sandbox/ admin routes.
 */
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { readFileSync } from 'node:fs'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import pg from 'pg'
import { server } from './targets.ts'

export interface SandboxProcess {
  url: string
  /** GET a /sandbox/ admin route's JSON. */
  get<T = unknown>(path: string): Promise<T>
  /** CPU seconds the process has used (Linux /proc), when it can be read. */
  cpuSeconds(): number | undefined
  close(): Promise<void>
}

/** Starts `src/sandbox/<name>/main.ts` with the flags given and waits for its "listening on URL" line. */
export async function spawnSandbox(name: string, flags: string[]): Promise<SandboxProcess> {
  const main = fileURLToPath(new URL(`../src/sandbox/${name}/main.ts`, import.meta.url))
  const child = spawn(process.execPath, ['--import', 'tsx', main, '--port', '0', ...flags], { stdio: ['ignore', 'pipe', 'inherit'] })
  const exited = once(child, 'exit')
  let url: string | undefined
  for await (const line of createInterface({ input: child.stdout! })) {
    url = /listening on (http:\/\/\S+)/.exec(line)?.[1]
    if (url) break
  }
  child.stdout!.resume()
  if (!url) throw new Error(`the ${name} sandbox process did not start`)
  return {
    url,
    async get(path) {
      const res = await fetch(url + path)
      if (!res.ok) throw new Error(`${name} sandbox ${path}: HTTP ${res.status}`)
      return res.json()
    },
    cpuSeconds() {
      try {
        const f = readFileSync(`/proc/${child.pid}/stat`, 'utf8').split(') ')[1].split(' ')
        return (Number(f[11]) + Number(f[12])) / 100 // utime, stime in clock ticks (100 a second on Linux)
      } catch {
        return undefined
      }
    },
    async close() {
      if (child.exitCode === null) child.kill('SIGTERM')
      await exited
    },
  }
}

/** PostgreSQL when its server answers within 3 s, else PGlite. */
export async function defaultDb(): Promise<'postgres' | 'pglite'> {
  const c = new pg.Client({ connectionString: server, connectionTimeoutMillis: 3000 })
  try {
    await c.connect()
    await c.query('SELECT 1')
    return 'postgres'
  } catch {
    return 'pglite'
  } finally {
    await c.end().catch(() => {})
  }
}

/**
 * Runs a benchmark's main until it ends or Ctrl-C: the first Ctrl-C aborts `stop` (main cleans up:
 * sandboxes closed, database dropped) and the exit code is 130; a second quits at once.
 */
export async function runInterruptible(main: () => Promise<void>, stop: AbortController, progress: (msg: string) => void, cleaned: string) {
  process.on('SIGINT', () => {
    if (stop.signal.aborted) process.exit(130)
    progress('stopping (Ctrl-C again to quit without cleaning up)')
    stop.abort()
  })
  await main().catch((err) => {
    if (!stop.signal.aborted) throw err
    progress(`interrupted: ${cleaned}`)
    process.exitCode = 130
  })
}
