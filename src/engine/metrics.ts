/**
 * Serves, at /metrics in Prometheus text form on loopback only, the engines' counters and every
 * queue's state (waiting, in flight, retrying, failed, oldest waiting age), read from the database
 * at each scrape: the same numbers as `herald queue`. With a Health, also /healthz and /readyz: a
 * process running engines only has no HTTP server of its own to answer them (src/http/health.ts).
 */
import { createServer, type Server, type ServerResponse } from 'node:http'
import type { Queryable } from '../db/types.ts'
import { HEALTHZ, readyAnswer, type Health } from '../http/health.ts'
import type { Counters } from './engine.ts'
import { allStats } from './queues.ts'

const GAUGES = [
  ['waiting', 'waiting', 'items due now'],
  ['in_flight', 'inFlight', 'items claimed under a live lease'],
  ['retrying', 'retrying', 'items waiting a backoff, a postponement or their scheduled time'],
  ['failed', 'failed', 'items failed for good, waiting for herald queue retry'],
  ['oldest_waiting_seconds', 'oldestWaitingSeconds', 'age of the oldest item due now'],
] as const

export async function queueMetrics(db: Queryable): Promise<string> {
  const all = await allStats(db)
  const lines: string[] = []
  for (const [name, field, help] of GAUGES) {
    lines.push(`# HELP herald_queue_${name} ${help}`, `# TYPE herald_queue_${name} gauge`)
    for (const s of all) if (s[field] !== null) lines.push(`herald_queue_${name}{engine="${s.engine}"} ${s[field]}`)
  }
  return lines.join('\n') + '\n'
}

const json = (res: ServerResponse, code: number, body: object) =>
  res.writeHead(code, { 'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-store' }).end(JSON.stringify(body))

export async function serveMetrics(counters: Counters, port: number, host = '127.0.0.1', db?: Queryable, health?: Health): Promise<Server> {
  const server = createServer((req, res) => {
    const path = req.url?.split('?')[0]
    if (req.method === 'GET' && health && path === '/healthz') json(res, 200, HEALTHZ)
    else if (req.method === 'GET' && health && path === '/readyz') void readyAnswer(health).then(({ code, body }) => json(res, code, body))
    else if (req.method === 'GET' && path === '/metrics') {
      const queues = db ? queueMetrics(db).catch(() => '# queue state unavailable: the database did not answer\n') : Promise.resolve('')
      void queues.then((q) => res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4' }).end(counters.prometheus() + q))
    } else {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: the counters are at /metrics\n')
    }
  })
  await new Promise<void>((resolve, reject) => server.once('error', reject).listen(port, host, resolve))
  return server
}
