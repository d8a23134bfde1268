/**
 * Errors as GOV.UK Notify answers them: {"status_code": N, "errors": [{"error": Name, "message": M}]}.
 * The names and messages are Notify's own (docs/notify-api-reference.md), so its clients and their
 * users' code that reads them keep working. Bad input is always a 4xx; no answer carries an internal
 * code (FST_ERR_*, SQLSTATE) or a stack, and a value echoed in a message is cut short.
 */
import type { FastifyInstance } from 'fastify'
import { clientStatus, isBadValue } from '../../http/server.ts'
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

/** How much of a bad value an error message echoes: enough to find it, never a 5 MB reference back. */
export const ECHO_CHARS = 100
/** A message's and an answer's own bounds, whatever a route put in them (a list of 10,000 unknown keys). */
const MESSAGE_CHARS = 1000
const MAX_ERRORS = 50
/** Deeper JSON than any request needs; a deeper body (200,000 levels) would overflow the stack later. */
export const MAX_JSON_DEPTH = 100
const INVALID_JSON = 'Invalid JSON supplied in POST data'

const cut = (s: string, n: number) => (s.length > n ? `${s.slice(0, n)}…` : s)

/** A bad value as Notify's messages show it (jsonschema's text without quotes), at most ECHO_CHARS long. */
export function shown(v: unknown): string {
  let s: string
  try {
    s = typeof v === 'string' ? v : String(JSON.stringify(v))
  } catch {
    s = typeof v
  }
  return cut(s, ECHO_CHARS).replace(/'/g, '')
}

/** Nesting depth of a JSON text, counted without parsing (and so without recursion). */
export function jsonDepth(text: string): number {
  let depth = 0
  let max = 0
  let inString = false
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i)
    if (inString) {
      if (c === 92) i++ // backslash: skip the escaped character
      else if (c === 34) inString = false
    } else if (c === 34) inString = true
    else if (c === 123 || c === 91) max = Math.max(max, ++depth)
    else if (c === 125 || c === 93) depth--
  }
  return max
}

/**
 * Bodies as Notify reads them: JSON whatever the content type (`request.get_json(force=True)`), so a
 * client that sends text/plain or no type at all is understood; nesting is capped.
 */
function notifyJson(app: FastifyInstance) {
  const parse = app.getDefaultJsonParser('error', 'error')
  app.addHook('onRequest', async (req) => {
    const h = req.raw.headers
    const hasBody = h['transfer-encoding'] !== undefined || (h['content-length'] !== undefined && h['content-length'] !== '0')
    if (hasBody) h['content-type'] = 'application/json'
  })
  app.removeAllContentTypeParsers()
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (req, body, done) => {
    if (jsonDepth(body as string) > MAX_JSON_DEPTH) return done(badRequest(`${INVALID_JSON}: nested deeper than ${MAX_JSON_DEPTH} levels`), undefined)
    parse(req, body as string, done)
  })
}

const answer = (status: number, error: string, messages: string[]) => ({
  status_code: status,
  errors: messages.slice(0, MAX_ERRORS).map((message) => ({ error, message: cut(message, MESSAGE_CHARS) })),
})

export function notifyErrors(app: FastifyInstance, log: Logger) {
  notifyJson(app)
  app.setErrorHandler((err: Error & { statusCode?: number; code?: string }, _req, reply) => {
    if (err instanceof ApiError) return reply.code(err.status).send(answer(err.status, err.error, err.messages))
    if (err.code === 'FST_ERR_CTP_INVALID_JSON_BODY' || err.code === 'FST_ERR_CTP_EMPTY_JSON_BODY' || (err.statusCode === 400 && err instanceof SyntaxError)) {
      return reply.code(400).send(answer(400, 'BadRequestError', [INVALID_JSON]))
    }
    if (isBadValue(err)) {
      // A value the database cannot take (a NUL in a reference, a number out of range): Notify answers its DataError so.
      log.warn({ err: errorText(err) }, 'messaging API request refused: a value the database cannot take')
      return reply.code(404).send(answer(404, 'NoResultFound', ['No result found']))
    }
    const status = clientStatus(err)
    if (status) return reply.code(status).send(answer(status, 'BadRequestError', [err.message])) // Fastify's own: body too large, bad URL
    log.error({ err: errorText(err) }, 'messaging API request failed')
    return reply.code(500).send(answer(500, 'Exception', ['Internal server error']))
  })
  app.setNotFoundHandler((req, reply) => reply.code(404).send({ result: 'error', message: `The requested URL was not found on the server: ${req.method} ${cut(req.url.split('?')[0], ECHO_CHARS)}` }))
}
