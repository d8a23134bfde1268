/**
 * Herald's HTTP server (Fastify): the routes other systems call, such as CommCare's case forwarder.
 * Started by `herald start` and `herald run` when HERALD_HTTP_PORT is set (not with `--role engines`).
 * With a Health: /healthz and /readyz, and a drain: once `health.draining` is set, requests arriving on
 * open connections are refused with 503 and every answer closes its connection, so `app.close()`
 * returns as soon as the requests in flight are answered.
 * Bad input is always a 4xx and no answer carries an internal code (FST_ERR_*, SQLSTATE) or a stack:
 * routes outside the messaging API's scope (receipts, the forwarder) get this file's error handler.
 */
import { STATUS_CODES } from 'node:http'
import type { Socket } from 'node:net'
import Fastify, { type FastifyError, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify'
import { errorText, type Logger } from '../log.ts'
import { HEALTHZ, readyAnswer, type Health } from './health.ts'

export type Routes = (app: FastifyInstance) => void

/** Room for a ~100 KB token, so that the API answers it as Notify does (403) rather than Node with a bare 431. */
export const MAX_HEADER_BYTES = 128 * 1024

/**
 * A data exception (SQLSTATE class 22: a date like 2026-02-31, a number out of range, a NUL in text)
 * comes from a value the request carried: bad input, not a fault of the server.
 */
export const isBadValue = (err: unknown) => /^22[0-9A-Z]{3}$/.test(String((err as { code?: unknown })?.code ?? ''))

/** The 4xx status an error stands for, or undefined when it is a fault of the server. */
export function clientStatus(err: unknown): number | undefined {
  const status = (err as { statusCode?: unknown })?.statusCode
  if (typeof status === 'number' && status >= 400 && status < 500) return status
  return isBadValue(err) ? 400 : undefined
}

/** Answers as `{ error }`, the format of the receipt and forwarder endpoints, with no internal detail. */
function plainErrors(log?: Logger) {
  return (err: FastifyError, _req: FastifyRequest, reply: FastifyReply) => {
    const status = clientStatus(err)
    if (status) return reply.code(status).send({ error: err.code === 'FST_ERR_CTP_INVALID_JSON_BODY' ? 'invalid JSON' : (STATUS_CODES[status] ?? 'bad request') })
    log?.error({ err: errorText(err) }, 'HTTP request failed')
    return reply.code(500).send({ error: 'internal error' })
  }
}

/** Node's parser refused the request before any route saw it: headers too large, or not HTTP. */
function clientError(err: NodeJS.ErrnoException, socket: Socket) {
  if (err.code === 'ECONNRESET' || socket.destroyed) return
  const [status, message] = err.code === 'HPE_HEADER_OVERFLOW' ? [431, 'Request headers too large'] : err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? [408, 'Request timeout'] : [400, 'Bad request']
  const body = JSON.stringify({ status_code: status, errors: [{ error: 'BadRequestError', message }] })
  if (socket.writable) {
    socket.write(`HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\nContent-Length: ${Buffer.byteLength(body)}\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n${body}`)
  }
  socket.destroy()
}

/** /healthz and /readyz (outside every scope: no auth, no hooks of the API or the console), and the drain. */
function healthRoutes(app: FastifyInstance, health: Health) {
  app.get('/healthz', async (_req, reply) => reply.header('cache-control', 'no-store').send(HEALTHZ))
  app.get('/readyz', async (_req, reply) => {
    const { code, body } = await readyAnswer(health)
    return reply.code(code).header('cache-control', 'no-store').send(body)
  })
  app.addHook('onRequest', async (req, reply) => {
    if (!health.draining || req.url === '/healthz' || req.url === '/readyz') return
    return reply.code(503).header('connection', 'close')
      .send({ status_code: 503, errors: [{ error: 'ServiceUnavailableError', message: 'This server is stopping; send the request again (to another server)' }] })
  })
  app.addHook('onSend', async (_req, reply) => {
    if (health.draining) reply.header('connection', 'close')
  })
}

export async function startHttpServer(host: string, port: number, routes: Routes[], log?: Logger, health?: Health): Promise<FastifyInstance> {
  // Our own 503 while draining (healthRoutes): Fastify's would answer /readyz without saying why.
  const app = Fastify({ logger: false, bodyLimit: 10 * 1024 * 1024, http: { maxHeaderSize: MAX_HEADER_BYTES }, clientErrorHandler: clientError,
    return503OnClosing: !health })
  app.setErrorHandler(plainErrors(log))
  if (health) healthRoutes(app, health)
  for (const r of routes) r(app)
  await app.listen({ host, port })
  return app
}
