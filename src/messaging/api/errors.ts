/**
 * Errors as GOV.UK Notify answers them: {"status_code": N, "errors": [{"error": Name, "message": M}]}.
 * The names and messages are Notify's own (docs/notify-api-reference.md), so its clients and their
 * users' code that reads them keep working.
 */
import type { FastifyInstance } from 'fastify'
import { errorText, type Logger } from '../../log.ts'

export class ApiError extends Error {
  constructor(readonly status: number, readonly error: string, message: string | string[]) {
    super(Array.isArray(message) ? message.join('; ') : message)
    this.messages = Array.isArray(message) ? message : [message]
  }
  readonly messages: string[]
}

export const badRequest = (message: string) => new ApiError(400, 'BadRequestError', message)
export const validation = (messages: string | string[]) => new ApiError(400, 'ValidationError', messages)
export const auth = (message: string, status = 403) => new ApiError(status, 'AuthError', message)
export const notFound = () => new ApiError(404, 'NoResultFound', 'No result found')

export function notifyErrors(app: FastifyInstance, log: Logger) {
  app.setErrorHandler((err: Error & { statusCode?: number; code?: string }, _req, reply) => {
    if (err instanceof ApiError) {
      return reply.code(err.status).send({ status_code: err.status, errors: err.messages.map((message) => ({ error: err.error, message })) })
    }
    if (err.code === 'FST_ERR_CTP_INVALID_JSON_BODY' || err.code === 'FST_ERR_CTP_EMPTY_JSON_BODY' || (err.statusCode === 400 && err instanceof SyntaxError)) {
      return reply.code(400).send({ status_code: 400, errors: [{ error: 'BadRequestError', message: 'Invalid JSON supplied in POST data' }] })
    }
    if (err.statusCode && err.statusCode >= 400 && err.statusCode < 500) {
      return reply.code(err.statusCode).send({ status_code: err.statusCode, errors: [{ error: 'BadRequestError', message: err.message }] })
    }
    log.error({ err: errorText(err) }, 'messaging API request failed')
    return reply.code(500).send({ status_code: 500, errors: [{ error: 'Exception', message: 'Internal server error' }] })
  })
  app.setNotFoundHandler((req, reply) => reply.code(404).send({ result: 'error', message: `The requested URL was not found on the server: ${req.method} ${req.url.split('?')[0]}` }))
}
