/** Serves the engines' counters at /metrics in Prometheus text form, on loopback only. */
import { createServer, type Server } from 'node:http'
import type { Counters } from './engine.ts'

export async function serveMetrics(counters: Counters, port: number, host = '127.0.0.1'): Promise<Server> {
  const server = createServer((req, res) => {
    if (req.method === 'GET' && req.url?.split('?')[0] === '/metrics') {
      res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4' }).end(counters.prometheus())
    } else {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: the counters are at /metrics\n')
    }
  })
  await new Promise<void>((resolve, reject) => server.once('error', reject).listen(port, host, resolve))
  return server
}
