/** Signing in to the console: sessions, CSRF, throttling, the second factor, and the first admin. */
import { generateSync } from 'otplib'
import { describe, expect, it } from 'vitest'
import { THROTTLE } from '../../src/console/sessions.ts'
import { resetPassword } from '../../src/console/users.ts'
import { consoleWorld, makeUser, PASSWORD, Visitor } from '../helpers/console.ts'

const w = consoleWorld()

describe('the console: signing in', () => {
  it('sends a visitor to sign in, and says how to make the first admin while there is none', async () => {
    const v = new Visitor(w.url)
    const home = await v.get('/')
    expect(home.status).toBe(302)
    expect(home.headers.get('location')).toBe('/sign-in')
    const page = await v.get('/sign-in')
    expect(page.status).toBe(200)
    expect(page.html).toContain('herald user create --admin')
    expect(page.headers.get('content-type')).toMatch(/text\/html/)
    await makeUser(w.db, 'admin@agency.example', { admin: true })
    expect((await v.get('/sign-in')).html).not.toContain('herald user create --admin')
  })

  it('signs in with the right password only, keeps the session in a signed cookie, and signs out', async () => {
    await makeUser(w.db, 'ada@agency.example', { pipeline: ['view'] })
    const v = new Visitor(w.url)
    const wrong = await v.post('/sign-in', { email: 'ada@agency.example', password: 'not the password' })
    expect(wrong.status).toBe(400)
    expect(wrong.html).toContain('The email address or password is not right')
    const unknown = await v.post('/sign-in', { email: 'nobody@agency.example', password: PASSWORD })
    expect(unknown.html).toContain('The email address or password is not right')
    const ok = await v.post('/sign-in', { email: 'ADA@agency.example', password: PASSWORD, next: '/account' })
    expect(ok.status).toBe(302)
    expect(ok.headers.get('location')).toBe('/account')
    expect(ok.headers.getSetCookie().find((c) => c.startsWith('herald_session='))).toMatch(/HttpOnly; SameSite=Lax/)
    expect((await v.get('/account')).html).toContain('ada@agency.example')
    expect((await w.db.query('SELECT count(*)::int AS n FROM console_sessions'))[0].n).toBe(1)
    const out = await v.post('/sign-out')
    expect(out.headers.get('location')).toBe('/sign-in')
    expect((await v.get('/account')).status).toBe(302)
  })

  it('never follows a next address off the site', async () => {
    await makeUser(w.db, 'bo@agency.example')
    const r = await new Visitor(w.url).post('/sign-in', { email: 'bo@agency.example', password: PASSWORD, next: '//evil.example/x' })
    expect(r.headers.get('location')).toBe('/')
  })

  it('refuses a form without its CSRF token', async () => {
    await makeUser(w.db, 'cy@agency.example')
    const v = new Visitor(w.url)
    await v.get('/sign-in')
    const r = await v.post('/sign-in', { _csrf: 'forged', email: 'cy@agency.example', password: PASSWORD })
    expect(r.status).toBe(403)
    expect(r.html).toContain('This form has expired')
  })

  it('throttles sign-in after repeated failures for an email, even with the right password', async () => {
    await makeUser(w.db, 'di@agency.example')
    const v = new Visitor(w.url)
    for (let i = 0; i < THROTTLE.perEmail; i++) expect((await v.post('/sign-in', { email: 'di@agency.example', password: 'wrong password!' })).status).toBe(400)
    const r = await v.post('/sign-in', { email: 'di@agency.example', password: PASSWORD })
    expect(r.status).toBe(429)
    expect(r.html).toMatch(/Too many failed attempts to sign in\. Try again in \d+ minutes?/)
  })

  it('asks for the second factor once it is set up, and only the right code lets the user in', async () => {
    await makeUser(w.db, 'ed@agency.example')
    const v = await new Visitor(w.url).signIn('ed@agency.example')
    const account = await v.get('/account')
    const secret = /id="totp-secret">([A-Z2-7]+)</.exec(account.html)![1]
    expect((await v.post('/account/two-factor', { secret, code: '000000' })).status).toBe(400)
    expect((await v.post('/account/two-factor', { secret, code: generateSync({ secret }) })).html).toContain('Signing in asks for a code')
    const again = new Visitor(w.url)
    const first = await again.post('/sign-in', { email: 'ed@agency.example', password: PASSWORD })
    expect(first.headers.get('location')).toMatch(/^\/two-factor/)
    expect((await again.get('/account')).status).toBe(302) // not in until the code
    expect((await again.post('/two-factor', { code: '123456' })).status).toBe(400)
    expect((await again.post('/two-factor', { code: generateSync({ secret }) })).status).toBe(302)
    expect((await again.get('/account')).status).toBe(200)
  })

  it('ends every session of a user whose password an operator resets', async () => {
    await makeUser(w.db, 'fi@agency.example')
    const v = await new Visitor(w.url).signIn('fi@agency.example')
    await resetPassword(w.db, 'fi@agency.example', 'a brand new password')
    expect((await v.get('/account')).status).toBe(302)
    await new Visitor(w.url).signIn('fi@agency.example', 'a brand new password')
  })
})
