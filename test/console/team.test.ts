/** The console's team pages: members and permissions, invitations by link, and accepting one. */
import { describe, expect, it } from 'vitest'
import { createService } from '../../src/messaging/services.ts'
import { consoleWorld, makeUser, PASSWORD, Visitor } from '../helpers/console.ts'

const w = consoleWorld()

async function setup() {
  const a = await createService(w.db, { name: 'Test results', smsSender: 'NYSDOH' })
  const b = await createService(w.db, { name: 'Flu clinic reminders' })
  const managerId = await makeUser(w.db, 'manager@agency.example', { services: { [a.id]: ['manage_service', 'view_activity'] } })
  const viewerId = await makeUser(w.db, 'viewer@agency.example', { services: { [a.id]: ['view_activity'] } })
  await makeUser(w.db, 'other@agency.example', { services: { [b.id]: ['manage_service'] } })
  return { a, b, managerId, viewerId, manager: await new Visitor(w.url).signIn('manager@agency.example') }
}

const linkIn = (html: string) => /id="invitation-link" readonly value="([^"]+)"/.exec(html)![1]

describe('the console: team', () => {
  it('lists members with their permissions, to manage_service only', async () => {
    const { a, manager } = await setup()
    const team = await manager.get(`/services/${a.id}/team`)
    expect(team.status).toBe(200)
    expect(team.html).toContain('viewer@agency.example')
    expect(team.html).not.toContain('other@agency.example')
    const viewer = await new Visitor(w.url).signIn('viewer@agency.example')
    expect((await viewer.get(`/services/${a.id}/team`)).status).toBe(403)
    expect((await viewer.post(`/services/${a.id}/team/invite`, { email: 'x@agency.example', permissions: ['view_activity'] })).status).toBe(403)
    const other = await new Visitor(w.url).signIn('other@agency.example')
    const refused = await other.get(`/services/${a.id}/team`)
    expect(refused.status).toBe(403)
    expect(refused.html).not.toContain('viewer@agency.example')
  })

  it('changes a member’s permissions, only for members of the service', async () => {
    const { a, b, viewerId, managerId, manager } = await setup()
    expect((await manager.post(`/services/${a.id}/team/${viewerId}`, { permissions: ['view_activity', 'send_messages'] })).status).toBe(302)
    expect((await w.db.query('SELECT permissions FROM service_users WHERE user_id = $1', [viewerId]))[0].permissions).toEqual(['view_activity', 'send_messages'])
    expect((await manager.post(`/services/${a.id}/team/${viewerId}`, { permissions: ['root'] })).status).toBe(400)
    const self = await manager.post(`/services/${a.id}/team/${managerId}`, { permissions: ['view_activity'] })
    expect(self.status).toBe(400)
    expect(self.html).toContain('You cannot take away your own permission to manage the team')
    const otherId = (await w.db.query(`SELECT id FROM users WHERE email = 'other@agency.example'`))[0].id
    expect((await manager.post(`/services/${a.id}/team/${otherId}`, { permissions: ['view_activity'] })).status).toBe(404)
    expect((await w.db.query('SELECT service_id FROM service_users WHERE user_id = $1', [otherId])).map((r) => r.service_id)).toEqual([b.id])
  })

  it('invites by email: the link is shown once, a new user sets a name and password, and then sees the service', async () => {
    const { a, manager } = await setup()
    const bad = await manager.post(`/services/${a.id}/team/invite`, { email: 'not an email', permissions: ['view_activity'] })
    expect(bad.status).toBe(400)
    expect(bad.html).toMatch(/id="email-error"[^>]*>Enter a valid email address/)
    expect((await manager.post(`/services/${a.id}/team/invite`, { email: 'viewer@agency.example', permissions: ['view_activity'] })).html).toContain('already a member')

    const invited = await manager.post(`/services/${a.id}/team/invite`, { email: 'New.Person@agency.example', permissions: ['view_activity', 'send_messages'] })
    expect(invited.status).toBe(200)
    expect(invited.html).toContain('Herald does not send email yet')
    const link = linkIn(invited.html)
    const token = link.split('/invitation/')[1]
    expect((await w.db.query('SELECT token_hash FROM invitations'))[0].token_hash.toString('hex')).not.toContain(Buffer.from(token).toString('hex'))
    expect((await manager.get(`/services/${a.id}/team`)).html).toContain('new.person@agency.example')

    const guest = new Visitor(w.url)
    const page = await guest.get(`/invitation/${token}`)
    expect(page.status).toBe(200)
    expect(page.html).toContain('Join Test results')
    expect(page.html).toContain('Create your account')
    const short = await guest.post(`/invitation/${token}`, { name: 'New Person', password: 'short', confirm: 'short' })
    expect(short.status).toBe(400)
    expect(short.html).toMatch(/id="password-error"[^>]*>Password must be at least 12/)
    const joined = await guest.post(`/invitation/${token}`, { name: 'New Person', password: PASSWORD, confirm: PASSWORD })
    expect(joined.status).toBe(302)
    expect(joined.headers.get('location')).toBe(`/services/${a.id}`)
    const dash = await guest.get(`/services/${a.id}`)
    expect(dash.status).toBe(200)
    expect((await guest.get('/services')).html).toContain('Test results')
    expect((await guest.get(`/invitation/${token}`)).status).toBe(404) // spent
    await new Visitor(w.url).signIn('new.person@agency.example')
  })

  it('lets a signed-in user accept an invitation for their own email only', async () => {
    const { a, b, manager } = await setup()
    const otherManager = await new Visitor(w.url).signIn('other@agency.example')
    const token = linkIn((await otherManager.post(`/services/${b.id}/team/invite`, { email: 'viewer@agency.example', permissions: ['view_activity'] })).html).split('/invitation/')[1]
    expect((await manager.get(`/invitation/${token}`)).html).toContain('this invitation is for viewer@agency.example')
    expect((await manager.post(`/invitation/${token}`)).status).toBe(403)
    const signedOut = await new Visitor(w.url).get(`/invitation/${token}`)
    expect(signedOut.html).toContain('Sign in to accept the invitation')
    const viewer = await new Visitor(w.url).signIn('viewer@agency.example')
    expect((await viewer.get(`/invitation/${token}`)).html).toContain('Accept the invitation')
    expect((await viewer.post(`/invitation/${token}`)).status).toBe(302)
    expect((await viewer.get(`/services/${b.id}`)).status).toBe(200)
    expect((await viewer.get(`/services/${a.id}`)).status).toBe(200)
    expect((await new Visitor(w.url).get('/invitation/nonsense')).status).toBe(404)
  })
})
