/**
 * Messaging API benchmark: sustained POST /v2/notifications/sms over loopback, each request a fresh
 * text through auth (JWT), validation, sealing and admission (rate and daily limits, the insert),
 * against PostgreSQL. Target: ≥ 3,000 requests/s with p99 < 50 ms on this 2-core machine.
 *
 *   npm run bench:api [-- --seconds 20 --connections 64 --workers 2 --pool 8 --tool autocannon|wrk --json]
 *
 * Setup (not timed): a database on DATABASE_URL's server (default the local one), created and dropped
 * after; a service whose limits the run cannot reach, a live key and a template. The API runs in
 * --workers processes (node:cluster, one listening port, as several API processes share one
 * database), each with a pool of --pool connections. The load generator (autocannon, in this
 * process; or wrk when --tool wrk and it is installed) shares the machine's two cores. Every 2xx is
 * then checked against the notifications table.
 */
import cluster from 'node:cluster'
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import { parseArgs } from 'node:util'
import { rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import autocannon from 'autocannon'
import { createSigner } from 'fast-jwt'
import { loadConfig } from '../src/config.ts'
import { migrate } from '../src/db/migrate.ts'
import { PostgresDb } from '../src/db/postgres.ts'
import { startHttpServer } from '../src/http/server.ts'
import { createLogger } from '../src/log.ts'
import { messagingKeys, messagingRoutes } from '../src/messaging/index.ts'
import { createKey, createService, createTemplate } from '../src/messaging/services.ts'
import { admin, targetUrl } from './targets.ts'

const { values: args } = parseArgs({
  options: {
    seconds: { type: 'string', default: '20' },
    connections: { type: 'string', default: '64' },
    workers: { type: 'string', default: '2' },
    pool: { type: 'string', default: '8' },
    tool: { type: 'string', default: 'autocannon' },
    port: { type: 'string', default: '6077' },
    profile: { type: 'string' }, // a folder: each API process writes a CPU profile there (--cpu-prof)
    json: { type: 'boolean', default: false },
  },
})
const SECRET = 'bench-secret-key-bench-secret-key-0123456789'
const progress = (msg: string) => process.stderr.write(`${msg}\n`)
const env = (db: string) => ({ HERALD_SECRET_KEY: SECRET, DATABASE_URL: targetUrl(db), HERALD_API_CACHE_MS: '2000' })

if (cluster.isWorker) {
  // An API process: the same routes herald start serves.
  const config = loadConfig(env(process.env.BENCH_DB!))
  const db = new PostgresDb('postgres', { connectionString: config.databaseUrl, max: Number(args.pool) })
  await startHttpServer('127.0.0.1', Number(args.port), [messagingRoutes(config, db, createLogger('silent'))])
  process.once('SIGTERM', () => process.exit(0))
  process.send!('ready')
} else {
  await main()
}

async function main() {
  const name = `herald_bench_api_${process.pid}`
  await admin(`CREATE DATABASE ${name}`)
  const db = new PostgresDb('postgres', { connectionString: targetUrl(name), max: 2 })
  const workers: ReturnType<typeof cluster.fork>[] = []
  try {
    await migrate(db)
    const config = loadConfig(env(name))
    const service = await createService(db, { name: 'Bench', smsSender: 'BENCH', rateLimit: 1_000_000_000, messageLimit: 1_000_000_000 })
    const { key } = await createKey(db, messagingKeys(config).secrets, service.id, 'live', 'normal')
    const template = await createTemplate(db, service.id, 'Result', 'Hello ((name)), your test result is ready. Reference ((ref)).', 'bench')
    if (args.profile) cluster.setupPrimary({ execArgv: [...process.execArgv, '--cpu-prof', `--cpu-prof-dir=${args.profile}`] })
    for (let i = 0; i < Number(args.workers); i++) {
      const w = cluster.fork({ BENCH_DB: name })
      workers.push(w)
      await new Promise((resolve, reject) => w.once('message', resolve).once('exit', reject))
    }
    const url = `http://127.0.0.1:${args.port}/v2/notifications/sms`
    // One token for the run: Notify accepts a token for 30 s after its iat, and the run is shorter.
    if (Number(args.seconds) > 25) throw new Error('--seconds: at most 25 (a token is good for 30 s)')
    const jwt = createSigner({ key: key.slice(-36), algorithm: 'HS256' })({ iss: service.id })
    const body = JSON.stringify({ template_id: template.id, phone_number: '+1 212 555 0100', personalisation: { name: 'Ada', ref: 'B-1' }, reference: 'bench' })
    progress(`${args.workers} API process(es), pool ${args.pool} each; ${args.tool}, ${args.connections} connections, ${args.seconds} s`)
    const r = args.tool === 'wrk' ? await runWrk(url, jwt, body) : await runAutocannon(url, jwt, body)
    const [{ n }] = await db.query('SELECT count(*)::int AS n FROM notifications')
    const result = {
      tool: args.tool, workers: Number(args.workers), pool: Number(args.pool), connections: Number(args.connections), seconds: Number(args.seconds),
      ...r, notifications_in_db: n, target: '≥ 3000 req/s with p99 < 50 ms', met: r.requests_per_s >= 3000 && r.p99_ms < 50,
    }
    if (args.json) console.log(JSON.stringify(result, null, 2))
    else {
      console.log(JSON.stringify(result, null, 2))
      console.log('\n| tool | API processes | connections | req/s | p50 ms | p99 ms | 2xx | other | in database | target |')
      console.log('| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |')
      console.log(`| ${result.tool} | ${result.workers} | ${result.connections} | ${Math.round(result.requests_per_s)} | ${result.p50_ms} | ${result.p99_ms} | ${result.ok} | ${result.other} | ${n} | ${result.met ? 'met' : 'NOT met'} |`)
    }
    // Requests still in flight when the load generator stops are answered, stored and not counted: up to one per connection.
    if (n < r.ok || n > r.ok + Number(args.connections)) {
      progress(`MISMATCH: ${r.ok} answers 201 but ${n} notifications stored`)
      process.exitCode = 1
    }
  } finally {
    // SIGTERM lets a profiled worker write its profile on the way out.
    await Promise.all(workers.map((w) => new Promise((resolve) => w.once('exit', resolve).process.kill('SIGTERM'))))
    await db.close()
    await admin(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`)
  }
}

async function runAutocannon(url: string, jwt: string, body: string) {
  const r = await autocannon({
    url, method: 'POST', connections: Number(args.connections), duration: Number(args.seconds), body,
    headers: { authorization: `Bearer ${jwt}`, 'content-type': 'application/json' },
  })
  return { requests_per_s: r.requests.average, p50_ms: r.latency.p50, p99_ms: r.latency.p99, max_ms: r.latency.max, ok: r['2xx'], other: r.non2xx + r.errors + r.timeouts }
}

/** wrk, if installed: a C load generator, lighter on the shared cores than autocannon. */
async function runWrk(url: string, jwt: string, body: string) {
  const script = join(tmpdir(), `herald-bench-api-${process.pid}.lua`)
  writeFileSync(script, `wrk.method = "POST"\nwrk.body = [[${body}]]\nwrk.headers["Content-Type"] = "application/json"\nwrk.headers["Authorization"] = "Bearer ${jwt}"
done = function(summary, latency, requests)
  io.write(string.format("JSON {\\"requests\\": %d, \\"seconds\\": %f, \\"p50\\": %f, \\"p99\\": %f, \\"max\\": %f, \\"errors\\": %d}\\n",
    summary.requests, summary.duration / 1e6, latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency.max / 1000,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.status + summary.errors.timeout))
end\n`)
  const { stdout } = await promisify(execFile)('wrk', ['-t2', `-c${args.connections}`, `-d${args.seconds}s`, '--latency', '-s', script, url])
    .finally(() => rmSync(script, { force: true }))
  const j = JSON.parse(/JSON (.*)/.exec(stdout)![1])
  return { requests_per_s: j.requests / j.seconds, p50_ms: j.p50, p99_ms: j.p99, max_ms: j.max, ok: j.requests - j.errors, other: j.errors }
}
