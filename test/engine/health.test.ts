/**
 * /healthz and /readyz (src/http/health.ts) on the HTTP server and the metrics port, the drain of the
 * HTTP server, and the roles of `herald run` as processes: `--role api` runs no engine, `--role engines`
 * serves no HTTP but answers /readyz on the metrics port, and a SIGTERM ends both cleanly.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { mkdirSync } from 'node:fs'
import { request } from 'node:http'
import { join } from 'node:path'
import type { FastifyInstance } from 'fastify'
import { openEmbedded } from '../../src/db/embedded.ts'
import { PgliteDb } from '../../src/db/pglite.ts'
import { PostgresDb } from '../../src/db/postgres.ts'
import { migrate } from '../../src/db/migrate.ts'
import type { Db } from '../../src/db/types.ts'
import { Counters, type Engine } from '../../src/engine/engine.ts'
import { serveMetrics } from '../../src/engine/metrics.ts'
import { EngineLoops, runEngines } from '../../src/engine/runner.ts'
import { Health } from '../../src/http/health.ts'
import { startHttpServer } from '../../src/http/server.ts'
import { createLogger } from '../../src/log.ts'
import { createTestDb, onPostgres, type TestDb } from '../helpers/db.ts'
import { copyFixture, row, tempDir } from '../helpers/files.ts'
import { linkRows, startSandbox } from '../helpers/casesync.ts'
import { loadCounties } from '../helpers/link.ts'
import { BIN, freePort, sleep } from '../helpers/kill.ts'

const log = createLogger('silent')
let t: TestDb
const tmp = tempDir()
beforeAll(async () => {
  t = await createTestDb()
}, 180_000)
afterAll(async () => {
  await t?.drop()
  tmp.cleanup()
})

async function serve(health: Health, extra: (app: FastifyInstance) => void = () => {}) {
  const app = await startHttpServer('127.0.0.1', 0, [extra], log, health)
  const a = app.server.address()
  return { app, url: `http://127.0.0.1:${typeof a === 'object' && a ? a.port : 0}` }
}
const get = async (url: string) => {
  const res = await fetch(url)
  return { status: res.status, body: await res.json() }
}

describe('/healthz and /readyz', () => {
  it('answer 200 on a live database with each check named, without auth', async () => {
    const { app, url } = await serve(new Health(t.db, { stallMs: 60_000 }))
    try {
      expect(await get(`${url}/healthz`)).toEqual({ status: 200, body: { status: 'ok' } })
      expect(await get(`${url}/readyz`)).toEqual({ status: 200, body: { status: 'ok', checks: { database: 'ok', migrations: 'ok' } } })
    } finally {
      await app.close()
    }
  })

  it('/readyz answers 503 naming the database when it is dead; /healthz still 200', { timeout: 240_000 }, async () => {
    let dead: Db
    if (onPostgres) dead = new PostgresDb('postgres', { connectionString: `postgres://postgres@127.0.0.1:${await freePort()}/nothing` })
    else {
      dead = await PgliteDb.open(undefined)
      await migrate(dead)
      await dead.close()
    }
    const { app, url } = await serve(new Health(dead, { stallMs: 60_000 }))
    try {
      expect(await get(`${url}/healthz`)).toEqual({ status: 200, body: { status: 'ok' } })
      const r = await get(`${url}/readyz`)
      expect(r).toEqual({ status: 503, body: { status: 'unavailable', failing: ['database', 'migrations'], checks: { database: 'unreachable', migrations: 'not checked' } } })
    } finally {
      await app.close()
      if (onPostgres) await dead.close()
    }
  })

  it.runIf(onPostgres)('/readyz turns 503 when its database is dropped under it (PostgreSQL)', async () => {
    const other = await createTestDb()
    const db = new PostgresDb('postgres', { connectionString: other.url })
    const { app, url } = await serve(new Health(db, { stallMs: 60_000 }))
    try {
      expect((await get(`${url}/readyz`)).status).toBe(200)
      await other.drop() // WITH (FORCE): terminates the health check's pooled connection too
      const r = await get(`${url}/readyz`)
      expect(r.status).toBe(503)
      expect(r.body.failing).toContain('database')
      expect(JSON.stringify(r.body)).not.toMatch(/postgres|127\.0\.0\.1|_t[0-9a-f]{8}/) // no host, user or database name
    } finally {
      await app.close()
      await db.close()
    }
  })

  it('/readyz names pending migrations', async () => {
    const [last] = await t.db.query('SELECT version, name FROM schema_migrations ORDER BY version DESC LIMIT 1')
    await t.db.query('DELETE FROM schema_migrations WHERE version = $1', [last.version])
    const { app, url } = await serve(new Health(t.db, { stallMs: 60_000 }))
    try {
      expect(await get(`${url}/readyz`)).toEqual({ status: 503,
        body: { status: 'unavailable', failing: ['migrations'], checks: { database: 'ok', migrations: `1 pending: ${last.name}` } } })
    } finally {
      await t.db.query('INSERT INTO schema_migrations (version, name) VALUES ($1, $2)', [last.version, last.name])
      await app.close()
    }
  })

  it('/readyz names an engine whose loop is stuck in a round, and one not started', async () => {
    let release!: () => void
    const stuck: Engine = { name: 'stuck', batchSize: 1, step: () => new Promise((r) => (release = () => r({}))) }
    const quick: Engine = { name: 'quick', batchSize: 1, step: async () => ({}) }
    const loops = new EngineLoops(['stuck', 'quick', 'later'])
    const health = new Health(t.db, { loops, stallMs: 300 })
    const stop = new AbortController()
    const running = runEngines(t.db, [stuck, quick], { pollIntervalMs: 50, signal: stop.signal, log, loops })
    const { app, url } = await serve(health)
    try {
      await sleep(600)
      const r = await get(`${url}/readyz`)
      expect(r.status).toBe(503)
      expect(r.body.failing).toEqual(['engines'])
      expect(r.body.checks.engines).toMatch(/^not running: stuck \(last seen \d+ s ago\), later \(not started\)$/)
      expect(loops.stalled(300).map((s) => s.engine)).toEqual(['stuck', 'later'])
    } finally {
      stop.abort()
      release()
      await running
      await app.close()
    }
    expect(loops.running.size).toBe(0)
  })

  it('are served on the metrics port too', async () => {
    const port = await freePort()
    const health = new Health(t.db, { stallMs: 60_000 })
    const server = await serveMetrics(new Counters(), port, '127.0.0.1', t.db, health)
    try {
      expect(await get(`http://127.0.0.1:${port}/healthz`)).toEqual({ status: 200, body: { status: 'ok' } })
      expect((await get(`http://127.0.0.1:${port}/readyz`)).status).toBe(200)
      health.draining = true
      expect(await get(`http://127.0.0.1:${port}/readyz`)).toEqual({ status: 503,
        body: { status: 'draining', checks: { draining: 'the process is stopping' }, failing: ['draining'] } })
    } finally {
      server.close()
    }
  })
})

describe('the drain of the HTTP server', () => {
  it('finishes a slow request in flight, says draining on /readyz, and refuses new connections', async () => {
    let slowStarted!: () => void
    const started = new Promise<void>((r) => (slowStarted = r))
    const health = new Health(t.db, { stallMs: 60_000 })
    const { app, url } = await serve(health, (a) => a.get('/slow', async () => {
      slowStarted()
      await sleep(800)
      return { done: true }
    }))
    // One keep-alive connection for the slow request, as a load balancer keeps.
    const port = Number(new URL(url).port)
    const slow = new Promise<{ status: number; body: string; connection?: string }>((resolve, reject) => {
      request({ host: '127.0.0.1', port, path: '/slow', agent: false }, (res) => {
        let body = ''
        res.on('data', (d) => (body += d)).on('end', () => resolve({ status: res.statusCode!, body, connection: res.headers.connection }))
      }).on('error', reject).end()
    })
    await started
    health.draining = true
    expect(await get(`${url}/readyz`)).toMatchObject({ status: 503, body: { status: 'draining' } })
    const began = Date.now()
    const closed = app.close()
    await sleep(100)
    await expect(fetch(`${url}/healthz`)).rejects.toThrow() // no new connection is accepted
    expect(await slow).toEqual({ status: 200, body: '{"done":true}', connection: 'close' })
    await closed
    expect(Date.now() - began).toBeLessThan(3000) // closed once the request was answered, not at a keep-alive timeout
  })
})

/** A `herald run` process with its stderr kept; `exit` resolves with its code. */
function herald(args: string[], env: NodeJS.ProcessEnv): { child: ChildProcess; exit: Promise<number | null>; stderr: () => string } {
  const child = spawn(process.execPath, [BIN, ...args], { env, stdio: ['ignore', 'ignore', 'pipe'] })
  let stderr = ''
  child.stderr!.on('data', (d) => (stderr += d))
  return { child, exit: once(child, 'exit').then(([code]) => code as number | null), stderr: () => stderr }
}

async function readyAt(url: string, maxMs = 400_000): Promise<{ status: number; body: Record<string, unknown> }> {
  const end = Date.now() + maxMs
  for (;;) {
    const r = await get(url).catch(() => undefined)
    if (r?.status === 200 || Date.now() > end) return r ?? { status: 0, body: {} }
    await sleep(100)
  }
}

describe('roles of herald run (processes)', () => {
  const roleEnv = async (name: string) => {
    const dir = join(tmp.dir, name)
    const outside = Object.fromEntries(Object.entries(process.env).filter(([k]) => (!k.startsWith('HERALD_') || k === 'HERALD_FROM_SOURCE') && k !== 'DATABASE_URL'))
    const db = onPostgres ? await createTestDb() : undefined
    const env = { ...outside, ...(db ? { DATABASE_URL: db.url, HERALD_SECRET_KEY: process.env.HERALD_SECRET_KEY } : {}),
      HERALD_LOG_LEVEL: 'warn', HERALD_POLL_INTERVAL_MS: '100', HERALD_DATA_DIR: join(dir, '.herald'), HERALD_INBOX: join(dir, 'inbox'),
      HERALD_HTTP_PORT: String(await freePort()), HERALD_METRICS_PORT: String(await freePort()) }
    const ingested = async () => {
      const d = db?.db ?? (await openEmbedded(join(dir, '.herald')))
      try {
        return (await d.query('SELECT count(*)::int AS n FROM inbox_files'))[0].n as number
      } finally {
        if (db) await db.drop()
        else await d.close()
      }
    }
    mkdirSync(env.HERALD_INBOX, { recursive: true })
    return { env, dir, ingested, testDb: db }
  }

  it('--role api serves the API and /readyz, runs no engine, and stops on SIGTERM', { timeout: 600_000 }, async () => {
    const { env, ingested } = await roleEnv('api')
    const p = herald(['run', '--role', 'api'], env)
    try {
      const began = Date.now()
      const r = await readyAt(`http://127.0.0.1:${env.HERALD_HTTP_PORT}/readyz`)
      console.log(`herald run --role api: ready in ${Date.now() - began} ms`)
      expect(r, p.stderr()).toEqual({ status: 200, body: { status: 'ok', checks: { database: 'ok', migrations: 'ok' } } })
      expect((await fetch(`http://127.0.0.1:${env.HERALD_HTTP_PORT}/v2/notifications`)).status).toBe(401) // the messaging API, asking for a key
      copyFixture('new_records.txt', env.HERALD_INBOX)
      await sleep(1500) // 15 polls: an ingest engine would have seen the file
      p.child.kill('SIGTERM')
      expect(await p.exit, p.stderr()).toBe(0)
    } finally {
      p.child.kill('SIGKILL')
    }
    expect(await ingested()).toBe(0)
  })

  it('--role engines runs the engines, serves no HTTP, and answers /readyz on the metrics port', { timeout: 600_000 }, async () => {
    const { env, ingested } = await roleEnv('engines')
    const p = herald(['run', '--role', 'engines'], env)
    try {
      copyFixture('new_records.txt', env.HERALD_INBOX!)
      const r = await readyAt(`http://127.0.0.1:${env.HERALD_METRICS_PORT}/readyz`)
      expect(r.status, p.stderr()).toBe(200)
      expect(r.body.checks).toMatchObject({ database: 'ok', migrations: 'ok', engines: 'ok' })
      expect(await get(`http://127.0.0.1:${env.HERALD_METRICS_PORT}/healthz`)).toEqual({ status: 200, body: { status: 'ok' } })
      await expect(fetch(`http://127.0.0.1:${env.HERALD_HTTP_PORT}/healthz`)).rejects.toThrow() // HERALD_HTTP_PORT is set, but no server
      await sleep(1500)
      p.child.kill('SIGTERM')
      expect(await p.exit, p.stderr()).toBe(0)
    } finally {
      p.child.kill('SIGKILL')
    }
    expect(await ingested()).toBe(1)
  })

  it('a stop that outlasts HERALD_DRAIN_SECONDS exits 1 naming the engine still in its round', { timeout: 600_000 }, async () => {
    const { env, dir, testDb } = await roleEnv('deadline')
    // CommCare answers after 8 s: case sync's round is in a call when the stop comes, longer than the drain allows.
    const commcare = await startSandbox({ latencyMs: 8000 })
    const db = testDb?.db ?? (await openEmbedded(join(dir, '.herald')))
    try {
      await migrate(db)
      await loadCounties(db)
      await linkRows(db, dir, [row(3, { PIDPATIENTKEY: 'DRAIN-1', PIDCOUNTYCODE: '1' })])
    } finally {
      if (!testDb) await db.close()
    }
    const p = herald(['run', '--role', 'engines', '--engines', 'casesync-out'], { ...env, HERALD_DRAIN_SECONDS: '1',
      HERALD_COMMCARE_URL: commcare.url, HERALD_COMMCARE_USER: 'herald', HERALD_COMMCARE_API_KEY: 'sandbox', HERALD_COMMCARE_ROOT_DOMAIN: 'ny-covid' })
    try {
      // The county list at start takes one slow answer too; then the round begins and waits on CommCare.
      const r = await readyAt(`http://127.0.0.1:${env.HERALD_METRICS_PORT}/readyz`)
      expect(r.status, p.stderr()).toBe(200)
      await sleep(1000)
      const stopped = Date.now()
      p.child.kill('SIGTERM')
      expect(await p.exit, p.stderr()).toBe(1)
      expect(Date.now() - stopped).toBeLessThan(10_000)
      expect(p.stderr()).toMatch(/the drain did not finish within 1 s \(HERALD_DRAIN_SECONDS\): engine casesync-out/)
    } finally {
      p.child.kill('SIGKILL')
      await commcare.close()
      await testDb?.drop()
    }
  })
})
