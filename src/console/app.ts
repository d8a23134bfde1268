/**
 * The Herald console: the pipeline and the messaging platform in a browser, served by Herald's HTTP
 * server at `/` beside the API. Server-rendered (Eta templates in views/, styled with the U.S. Web
 * Design System, its assets served from the package, no CDN); every page works without JavaScript.
 *
 * Every request in this scope: the signed session cookie names a session (sessions.ts), whose user
 * (users.ts) is `req.user`; every form carries a CSRF token (@fastify/csrf-protection, a signed
 * cookie secret). Pages (pages/) call the same functions the CLI and the API call: no SQL in a page.
 */
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import fastifyCookie from '@fastify/cookie'
import fastifyCsrf from '@fastify/csrf-protection'
import fastifyFormbody from '@fastify/formbody'
import fastifyStatic from '@fastify/static'
import { Eta } from 'eta'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import type { Config } from '../config.ts'
import type { Db } from '../db/types.ts'
import type { Routes } from '../http/server.ts'
import { errorText, type Logger } from '../log.ts'
import { deriveKey } from '../privacy/keys.ts'
import type { Sealer } from '../privacy/seal.ts'
import { findSession } from './sessions.ts'
import { loadUser, type User } from './users.ts'

export interface ConsoleDeps {
  db: Db
  log: Logger
  /** HERALD_SECRET_KEY (or the data folder's key): the cookie key is derived from it. */
  secret: string
  sealer: Sealer
  /** Herald's settings (the phone region, the job store: what pages pass to the engines' functions). */
  config: Config
}

/** What every page of the console needs; `register` adds a group of pages. */
export interface ConsoleContext extends ConsoleDeps {
  render: (reply: FastifyReply, view: string, data?: Record<string, unknown>) => FastifyReply
}
export type Pages = (scope: FastifyInstance, ctx: ConsoleContext) => void

declare module 'fastify' {
  interface FastifyRequest {
    user: User | null
    sessionToken: string | null
  }
}

export const SESSION_COOKIE = 'herald_session'
const VIEWS = join(dirname(fileURLToPath(import.meta.url)), 'views')
const ASSETS = join(dirname(fileURLToPath(import.meta.url)), 'assets')
// The package exports only its JavaScript: its folder is found from that file (…/dist/js/uswds.min.js).
const USWDS = join(dirname(createRequire(import.meta.url).resolve('@uswds/uswds')), '..')

/** Where a signed-out visitor may go; everything else sends them to sign in. */
const PUBLIC = [/^\/sign-in$/, /^\/two-factor$/, /^\/invitation\//, /^\/assets\//]

export function consoleRoutes(deps: ConsoleDeps, pages: Pages[]): Routes {
  const eta = new Eta({ views: VIEWS, cache: true, autoEscape: true })
  const render: ConsoleContext['render'] = (reply, view, data = {}) => {
    const req = reply.request
    const html = eta.render(view, { ...data, user: req.user, csrf: reply.generateCsrf(), path: req.url.split('?')[0] })
    return reply.type('text/html; charset=utf-8').header('cache-control', 'no-store').send(html)
  }
  const ctx: ConsoleContext = { ...deps, render }
  return (app) => {
    void app.register(async (scope) => {
      await scope.register(fastifyFormbody)
      await scope.register(fastifyCookie, { secret: deriveKey(deps.secret, 'console:cookies') })
      await scope.register(fastifyCsrf, {
        sessionPlugin: '@fastify/cookie',
        cookieOpts: { signed: true, httpOnly: true, sameSite: 'strict', path: '/' },
        // A multipart form (a CSV upload) is not parsed before this check: its token rides in the action's query.
        getToken: (req) => (req.body as Record<string, string> | undefined)?._csrf ?? (req.headers['x-csrf-token'] as string | undefined)
          ?? (req.headers['content-type']?.startsWith('multipart/form-data') ? (req.query as Record<string, string>)._csrf : undefined),
      })
      await scope.register(fastifyStatic, { root: USWDS, prefix: '/assets/uswds/', decorateReply: false, maxAge: '1d' })
      await scope.register(fastifyStatic, { root: ASSETS, prefix: '/assets/console/', decorateReply: false })
      scope.decorateRequest('user', null)
      scope.decorateRequest('sessionToken', null)
      scope.addHook('onRequest', async (req, reply) => {
        reply.header('x-frame-options', 'DENY').header('referrer-policy', 'same-origin').header('x-content-type-options', 'nosniff')
        const path = req.url.split('?')[0]
        // Stylesheets and scripts are the same for everyone: no session to look up for each.
        if (path.startsWith('/assets/')) return
        await identify(deps.db, req)
        if (req.user || PUBLIC.some((p) => p.test(path))) return
        if (req.method === 'GET') return reply.redirect(`/sign-in${path === '/' ? '' : `?next=${encodeURIComponent(req.url)}`}`)
        return reply.code(401).type('text/plain').send('Sign in first')
      })
      // Every form, everywhere in the console, carries the CSRF token.
      scope.addHook('preHandler', (req, reply, done) => (req.method === 'POST' ? scope.csrfProtection(req, reply, done) : done()))
      scope.setErrorHandler((err: Error, req, reply) => {
        const status = (err as { statusCode?: number }).statusCode ?? 500
        if (status >= 500) deps.log.error({ err: errorText(err), url: req.url.split('?')[0] }, 'console page failed')
        const message = status === 403 && /csrf/i.test(err.message) ? 'This form has expired: go back, reload the page and try again.'
          : status >= 500 ? 'Something went wrong on our side. Try again; if it keeps happening, tell your administrator.' : err.message
        return render(reply.code(status), 'error', { status, message })
      })
      for (const p of pages) p(scope, ctx)
    })
  }
}

/** req.user from the session cookie, when it is valid, unexpired, and past its second factor. */
async function identify(db: Db, req: FastifyRequest) {
  const raw = req.cookies[SESSION_COOKIE]
  const unsigned = raw ? req.unsignCookie(raw) : undefined
  if (!unsigned?.valid || !unsigned.value) return
  const session = await findSession(db, unsigned.value)
  if (!session) return
  req.sessionToken = unsigned.value
  const user = await loadUser(db, session.userId)
  if (user && (!user.hasSecondFactor || session.secondFactor)) req.user = user
}

/** An error with an HTTP status, for a page to throw (403: not allowed; 404: not there; 400: bad input). */
export function httpError(status: number, message: string): Error {
  return Object.assign(new Error(message), { statusCode: status })
}
