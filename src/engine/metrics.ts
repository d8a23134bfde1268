/**
 * Serves, at /metrics in Prometheus text form on loopback only, the engines' counters and every
 * queue's state (waiting, in flight, retrying, failed, oldest waiting age), read from the database
 * at each scrape: the same numbers as `herald queue`.
 */
import { createServer, type Server } from 'node:http'
import type { Queryable } from '../db/types.ts'
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

export async function serveMetrics(counters: Counters, port: number, host = '127.0.0.1', db?: Queryable): Promise<Server> {
  const server = createServer((req, res) => {
    if (req.method === 'GET' && req.url?.split('?')[0] === '/metrics') {
      const queues = db ? queueMetrics(db).catch(() => '# queue state unavailable: the database did not answer\n') : Promise.resolve('')
      void queues.then((q) => res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4' }).end(counters.prometheus() + q))
    } else {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: the counters are at /metrics\n')
    }
  })
  await new Promise<void>((resolve, reject) => server.once('error', reject).listen(port, host, resolve))
  return server
}
