/** Herald's HTTP server in tests, on a free loopback port. */
import type { FastifyInstance } from 'fastify'
import { startHttpServer, type Routes } from '../../src/http/server.ts'

/**
 * A server whose routes must know its own address (Twilio signs the URL it posts to): a free port is
 * found first, then the server starts again on it with the routes made for that URL.
 */
export async function serveAtOwnUrl(routes: (url: string) => Routes[] | Promise<Routes[]>): Promise<{ url: string; app: FastifyInstance }> {
  const probe = await startHttpServer('127.0.0.1', 0, [])
  const a = probe.server.address()
  const url = `http://127.0.0.1:${typeof a === 'object' && a ? a.port : 0}`
  await probe.close()
  return { url, app: await startHttpServer('127.0.0.1', Number(new URL(url).port), await routes(url)) }
}
