/**
 * Herald's HTTP server (Fastify): the routes other systems call, such as CommCare's case forwarder.
 * Started by `herald start` and `herald run` when HERALD_HTTP_PORT is set.
 */
import Fastify, { type FastifyInstance } from 'fastify'

export type Routes = (app: FastifyInstance) => void

export async function startHttpServer(host: string, port: number, routes: Routes[]): Promise<FastifyInstance> {
  const app = Fastify({ logger: false, bodyLimit: 10 * 1024 * 1024 })
  for (const r of routes) r(app)
  await app.listen({ host, port })
  return app
}
