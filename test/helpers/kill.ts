/**
 * Kill tests: a seed printed so a failure can be replayed, `herald run` worker processes that are
 * SIGKILLed and started again, and Herald's receipt routes in the test process (so receipts reach
 * the database whichever worker is down).
 */
import { afterAll, beforeAll, expect } from 'vitest'
import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { createServer } from 'node:net'
import type { Db } from '../../src/db/types.ts'
import { createLogger } from '../../src/log.ts'
import { receiptRoutes } from '../../src/messaging/receipts/routes.ts'
import { mulberry32 } from '../../src/sandbox/random.ts'
import { createTestDb, onPostgres, type TestDb } from './db.ts'
import { tempDir } from './files.ts'
import { serveAtOwnUrl } from './http.ts'

export const BIN = new URL('../../bin/herald.js', import.meta.url).pathname
export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

/** HERALD_KILL_SEED, or a random one; printed, with its generator, so a failure can be replayed. */
export function killSeed(test: string): { seed: number; random: () => number } {
  const seed = process.env.HERALD_KILL_SEED ? Number(process.env.HERALD_KILL_SEED) : Math.floor(Math.random() * 2 ** 31)
  console.log(`${test}: HERALD_KILL_SEED=${seed}`)
  return { seed, random: mulberry32(seed) }
}

/**
 * What a kill test's processes share: a database on the PostgreSQL server, created before the file's
 * tests and dropped after (none on PGlite, where these tests do not run), and a temporary folder.
 */
export function processWorld(): { readonly t: TestDb; readonly tmp: { dir: string } } {
  let t: TestDb | undefined
  const tmp = tempDir()
  beforeAll(async () => {
    if (onPostgres) t = await createTestDb()
  })
  afterAll(async () => {
    await t?.drop()
    tmp.cleanup()
  })
  return { get t() { return t! }, tmp }
}

/** A loopback port free now. */
export async function freePort(): Promise<number> {
  const server = createServer().listen(0, '127.0.0.1')
  await once(server, 'listening')
  const a = server.address()
  server.close()
  return typeof a === 'object' && a ? a.port : 0
}

/**
 * One worker slot: a `herald run` process killed and started again, each incarnation with its own
 * worker id. It serves /metrics on a port of its own: answering there means its engines are running
 * (it takes a second or more to start, longer on a busy machine).
 */
export class Worker {
  id = ''
  private child?: ChildProcess
  private stderr = ''
  private incarnation = 0
  private up?: Promise<number>
  private readyAt = 0

  constructor(private readonly slot: string, private readonly args: string[], private readonly env: NodeJS.ProcessEnv, private readonly port: number) {}

  start(): void {
    this.id = `${this.slot}-${++this.incarnation}`
    this.stderr = ''
    this.readyAt = 0
    this.child = spawn(process.execPath, [BIN, ...this.args], {
      env: { ...this.env, HERALD_WORKER_ID: this.id, HERALD_METRICS_PORT: String(this.port) }, stdio: ['ignore', 'ignore', 'pipe'] })
    this.child.stderr!.on('data', (d) => (this.stderr += d))
    this.up = this.poll(this.child)
  }

  /** When its engines started (ms since the epoch); or when it stopped trying to see (it died, or 15 s passed). */
  ready(): Promise<number> {
    return this.up!
  }

  /** Its engines are running now. */
  running(): boolean {
    return this.readyAt > 0
  }

  private async poll(child: ChildProcess): Promise<number> {
    for (let i = 0; i < 600 && child.exitCode === null && child.signalCode === null; i++) {
      if (await fetch(`http://127.0.0.1:${this.port}/up`).then((r) => r.arrayBuffer()).then(() => true, () => false)) break
      await sleep(25)
    }
    if (child === this.child) this.readyAt = Date.now()
    return Date.now()
  }

  /** SIGKILL; the process must still have been running (killed, not crashed). Returns the id it ran as. */
  async kill(): Promise<string> {
    const child = this.child!
    const exited = child.exitCode === null && child.signalCode === null ? once(child, 'exit') : Promise.resolve()
    expect(child.exitCode, `worker ${this.id} exited by itself: ${this.stderr}`).toBeNull()
    child.kill('SIGKILL')
    this.readyAt = 0
    await exited
    return this.id
  }

  /** At the end, whatever state it is in. */
  stop(): void {
    this.child?.kill('SIGKILL')
  }
}

/** Herald's delivery receipt routes on a free loopback port, writing to `db`; `url` is HERALD_PUBLIC_URL. */
export async function receiptServer(db: Db, secret: string, twilioAuthToken: string): Promise<{ url: string; close(): Promise<void> }> {
  const { url, app } = await serveAtOwnUrl((publicUrl) => [receiptRoutes({ db, log: createLogger('silent'), publicUrl, secret, twilioAuthToken })])
  return { url, close: () => app.close() }
}

/** Waits until `count` has not changed for `quietMs` (receipts still on their way, say). */
export async function settled(count: () => number, quietMs = 400, maxMs = 15_000): Promise<void> {
  const end = Date.now() + maxMs
  for (let last = -1; Date.now() < end;) {
    const now = count()
    if (now === last) return
    last = now
    await sleep(quietMs)
  }
}
