/** Signing in and out, the second factor, and the account page where a user sets one up. */
import type { FastifyReply, FastifyRequest } from 'fastify'
import { SESSION_COOKIE, type Pages } from '../app.ts'
import { clearFailures, endSession, findSession, passSecondFactor, recordFailure, SESSION_HOURS, startSession, throttled } from '../sessions.ts'
import { canPipeline, checkLogin, checkSecondFactor, confirmSecondFactor, countUsers, loadUser, newSecondFactor, UserError } from '../users.ts'

type Form = Record<string, string | undefined>
/** Only a path of this site: `next` must not send a signed-in user elsewhere. */
const safeNext = (next: string | undefined) => (next && /^\/(?!\/)/.test(next) && !next.startsWith('/sign-') ? next : '/')

/** The session cookie (signed, HttpOnly, SameSite=Lax), for every page that signs someone in. */
export function setSession(req: FastifyRequest, reply: FastifyReply, token: string) {
  reply.setCookie(SESSION_COOKIE, token, {
    signed: true, httpOnly: true, sameSite: 'lax', path: '/', secure: req.protocol === 'https', maxAge: SESSION_HOURS * 3600,
  })
}

export const authPages: Pages = (scope, { db, sealer, render }) => {
  scope.get('/', async (req, reply) => reply.redirect(req.user && canPipeline(req.user, 'view') ? '/pipeline' : '/services'))

  scope.get<{ Querystring: Form }>('/sign-in', async (req, reply) => {
    if (req.user) return reply.redirect(safeNext(req.query.next))
    return render(reply, 'sign-in', { next: req.query.next, noUsers: (await countUsers(db)) === 0 })
  })

  scope.post<{ Body: Form }>('/sign-in', async (req, reply) => {
    const email = (req.body.email ?? '').trim()
    const again = (error: string, status = 400) => render(reply.code(status), 'sign-in', { error, email, next: req.body.next })
    if (!email || !req.body.password) return again('Enter your email address and password')
    const wait = await throttled(db, email, req.ip)
    if (wait) return again(`Too many failed attempts to sign in. Try again in ${wait} minute${wait === 1 ? '' : 's'}.`, 429)
    const userId = await checkLogin(db, email, req.body.password)
    if (!userId) {
      await recordFailure(db, email, req.ip)
      return again('The email address or password is not right')
    }
    await clearFailures(db, email)
    setSession(req, reply, await startSession(db, userId, false))
    if ((await loadUser(db, userId))?.hasSecondFactor) return reply.redirect(`/two-factor?next=${encodeURIComponent(safeNext(req.body.next))}`)
    return reply.redirect(safeNext(req.body.next))
  })

  scope.get<{ Querystring: Form }>('/two-factor', async (req, reply) => {
    if (!req.sessionToken) return reply.redirect('/sign-in')
    return render(reply, 'two-factor', { next: req.query.next })
  })

  scope.post<{ Body: Form }>('/two-factor', async (req, reply) => {
    if (!req.sessionToken) return reply.redirect('/sign-in')
    const session = await findSession(db, req.sessionToken)
    const user = session && (await loadUser(db, session.userId))
    if (!user) return reply.redirect('/sign-in')
    const email = user.email
    const wait = await throttled(db, email, req.ip)
    if (wait) return render(reply.code(429), 'two-factor', { error: `Too many wrong codes. Try again in ${wait} minutes.`, next: req.body.next })
    if (!(await checkSecondFactor(db, sealer, user.id, req.body.code ?? ''))) {
      await recordFailure(db, email, req.ip)
      return render(reply.code(400), 'two-factor', { error: 'The code is not right: enter the 6 digits your app shows now', next: req.body.next })
    }
    await clearFailures(db, email)
    await passSecondFactor(db, req.sessionToken)
    return reply.redirect(safeNext(req.body.next))
  })

  scope.post('/sign-out', async (req, reply) => {
    if (req.sessionToken) await endSession(db, req.sessionToken)
    reply.clearCookie(SESSION_COOKIE, { path: '/' })
    return reply.redirect('/sign-in')
  })

  scope.get('/account', async (req, reply) => render(reply, 'account', { setup: req.user!.hasSecondFactor ? undefined : newSecondFactor(req.user!.email) }))

  scope.post<{ Body: Form }>('/account/two-factor', async (req, reply) => {
    try {
      await confirmSecondFactor(db, sealer, req.user!.id, req.body.secret ?? '', req.body.code ?? '')
      await passSecondFactor(db, req.sessionToken!)
    } catch (err) {
      if (!(err instanceof UserError)) throw err
      const setup = { secret: req.body.secret ?? '', uri: newSecondFactor(req.user!.email).uri.replace(/secret=[^&]*/, `secret=${req.body.secret ?? ''}`) }
      return render(reply.code(400), 'account', { setup, error: err.message })
    }
    return render(reply, 'account', { done: true })
  })
}
