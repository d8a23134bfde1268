/** The console's messaging services: the list, creating one, the dashboard, API keys and send one-off, with who may see what. */
import { createSigner } from 'fast-jwt'
import { describe, expect, it } from 'vitest'
import type { Db } from '../../src/db/types.ts'
import { createService, createTemplate } from '../../src/messaging/services.ts'
import { consoleWorld, makeUser, Visitor } from '../helpers/console.ts'

const w = consoleWorld()

/** Two services (one member of each kind in "Test results"), a template in each. */
async function setup(db: Db) {
  await db.query(`INSERT INTO sms_rates (valid_from, rate) VALUES ('2020-01-01', 0.0079)`)
  const a = await createService(db, { name: 'Test results', smsSender: 'NYSDOH' })
  const b = await createService(db, { name: 'Flu clinic reminders', smsSender: 'FLU' })
  const ta = await createTemplate(db, a.id, 'Result ready', 'Hello ((name)), your result is ready.', 'tester')
  const tb = await createTemplate(db, b.id, 'Clinic open', 'The flu clinic is open today.', 'tester')
  await makeUser(db, 'admin@agency.example', { admin: true })
  await makeUser(db, 'viewer@agency.example', { services: { [a.id]: ['view_activity'] } })
  await makeUser(db, 'sender@agency.example', { services: { [a.id]: ['view_activity', 'send_messages', 'manage_api_keys'] } })
  await makeUser(db, 'other@agency.example', { services: { [b.id]: ['view_activity', 'send_messages', 'manage_templates', 'manage_service', 'manage_api_keys'] } })
  const as = async (email: string) => new Visitor(w.url).signIn(email)
  return { a, b, ta, tb, as }
}

describe('the console: services', () => {
  it('lists the services a user is in (all of them for an admin), and only an admin creates one', async () => {
    const { a, as } = await setup(w.db)
    const admin = await as('admin@agency.example')
    const all = await admin.get('/services')
    expect(all.status).toBe(200)
    expect(all.html).toContain('Test results')
    expect(all.html).toContain('Flu clinic reminders')
    const viewer = await as('viewer@agency.example')
    const mine = await viewer.get('/services')
    expect(mine.html).toContain(`href="/services/${a.id}"`)
    expect(mine.html).not.toContain('Flu clinic reminders')
    expect(mine.html).not.toContain('Add a new service')
    expect((await viewer.post('/services', { name: 'Mine', sender: 'MINE' })).status).toBe(403)

    expect((await admin.post('/services', { name: '', sender: '' })).html).toMatch(/usa-error-message[^>]*>Enter a service name/)
    const dup = await admin.post('/services', { name: 'test RESULTS', sender: '' })
    expect(dup.status).toBe(400)
    expect(dup.html).toContain('already in use')
    expect((await admin.post('/services', { name: 'Vaccines', sender: 'far too long a sender' })).html).toMatch(/id="sender-error"/)
    const made = await admin.post('/services', { name: 'Vaccines', sender: 'VAX' })
    expect(made.status).toBe(302)
    const dash = await admin.get(made.headers.get('location')!)
    expect(dash.status).toBe(200)
    expect(dash.html).toContain('<h1 class="margin-top-4">Dashboard</h1>')
    expect(dash.html).toContain('Vaccines')
  })

  it('sends a signed-out visitor to sign in from every service page', async () => {
    const { a, ta } = await setup(w.db)
    const v = new Visitor(w.url)
    for (const path of ['/services', `/services/${a.id}`, `/services/${a.id}/templates`, `/services/${a.id}/templates/${ta.id}`, `/services/${a.id}/send/${ta.id}`,
      `/services/${a.id}/api-keys`, `/services/${a.id}/team`]) {
      const r = await v.get(path)
      expect(r.status, path).toBe(302)
      expect(r.headers.get('location'), path).toMatch(/^\/sign-in\?next=/)
    }
  })

  it('refuses each page without its permission, and shows a member of another service nothing of this one', async () => {
    const { a, b, ta, tb, as } = await setup(w.db)
    const viewer = await as('viewer@agency.example')
    expect((await viewer.get(`/services/${a.id}`)).status).toBe(200)
    expect((await viewer.get(`/services/${a.id}/templates`)).status).toBe(200)
    for (const path of [`/services/${a.id}/send/${ta.id}`, `/services/${a.id}/api-keys`, `/services/${a.id}/team`, `/services/${a.id}/templates/new`]) {
      expect((await viewer.get(path)).status, path).toBe(403)
    }
    expect((await viewer.post(`/services/${a.id}/api-keys`, { name: 'x', type: 'normal' })).status).toBe(403)
    expect((await viewer.post(`/services/${a.id}/templates/${ta.id}`, { name: 'x', body: 'y', action: 'save' })).status).toBe(403)
    // The side navigation shows only what the viewer may use.
    const dash = await viewer.get(`/services/${a.id}`)
    expect(dash.html).toContain(`/services/${a.id}/activity`)
    expect(dash.html).not.toContain(`/services/${a.id}/api-keys`)

    const other = await as('other@agency.example')
    for (const path of [`/services/${a.id}`, `/services/${a.id}/templates`, `/services/${a.id}/templates/${ta.id}`, `/services/${a.id}/templates/${ta.id}/versions`,
      `/services/${a.id}/send/${ta.id}`, `/services/${a.id}/api-keys`, `/services/${a.id}/team`]) {
      const r = await other.get(path)
      expect([403, 404], path).toContain(r.status)
      expect(r.html, path).not.toContain('Test results')
      expect(r.html, path).not.toContain('Result ready')
    }
    // A template of another service, under a service the user is in: not there.
    const cross = await other.get(`/services/${b.id}/templates/${ta.id}`)
    expect(cross.status).toBe(404)
    expect(cross.html).not.toContain('Result ready')
    expect((await other.get(`/services/${b.id}/send/${ta.id}`)).status).toBe(404)
    expect((await other.get(`/services/${b.id}/templates/${tb.id}`)).status).toBe(200)
    expect((await other.get('/services/not-a-uuid')).status).toBe(404)
    const admin = await as('admin@agency.example')
    expect((await admin.get('/services/00000000-0000-4000-8000-000000000000')).status).toBe(404)
  })
})

describe('the console: dashboard', () => {
  it('counts texts today and in the last 7 days, by template, leaving out test keys', async () => {
    const { a, ta, as } = await setup(w.db)
    const sender = await as('sender@agency.example')
    expect((await sender.post(`/services/${a.id}/send/${ta.id}`, { phone_number: '+1 212 555 0100', p0: 'Ada' })).status).toBe(302)
    // Two days ago, from the facts: 3 delivered and 1 failed; a test key's text is not counted.
    for (const [status, n, key] of [['delivered', 3, 'normal'], ['permanent-failure', 1, 'normal'], ['delivered', 5, 'test']] as const) {
      await w.db.query(`INSERT INTO ft_notification_status (local_date, service_id, template_id, job_id, notification_type, key_type, status, notification_count)
        VALUES ((now() AT TIME ZONE 'America/New_York')::date - 2, $1, $2, NULL, 'sms', $3, $4, $5)`, [a.id, ta.id, key, status, n])
    }
    const dash = await sender.get(`/services/${a.id}`)
    expect(dash.status).toBe(200)
    const numbers = [...dash.html.matchAll(/font-heading-2xl text-bold">(\d+)</g)].map((m) => Number(m[1]))
    expect(numbers).toEqual([1, 0, 0, 5, 3, 1]) // today: sent, delivered, failed; then the week
    expect(dash.html).toMatch(/Result ready<\/a><\/th><td class="text-right">5<\/td><td class="text-right">3<\/td><td class="text-right">1</)
  })
})

describe('the console: API keys', () => {
  it('shows a new key once, in Notify’s format, lists only its name after, and a revoked key stops working', async () => {
    const { a, as } = await setup(w.db)
    const v = await as('sender@agency.example')
    expect((await v.post(`/services/${a.id}/api-keys`, { name: '', type: 'normal' })).html).toMatch(/id="name-error"[^>]*>Enter a name/)
    expect((await v.post(`/services/${a.id}/api-keys`, { name: 'k', type: 'gold' })).status).toBe(400)
    const made = await v.post(`/services/${a.id}/api-keys`, { name: 'Case system', type: 'normal' })
    expect(made.status).toBe(200)
    const key = /id="api-key"[^>]*>([^<]+)</.exec(made.html)![1]
    expect(key).toMatch(new RegExp(`^case_system-${a.id}-[0-9a-f-]{36}$`))
    const list = await v.get(`/services/${a.id}/api-keys`)
    expect(list.html).toContain('Case system')
    expect(list.html).not.toContain(key.slice(-36))
    expect((await v.post(`/services/${a.id}/api-keys`, { name: 'Case system', type: 'test' })).html).toContain('already exists')

    const call = () => fetch(`${w.url}/v2/templates`, { headers: { authorization: `Bearer ${createSigner({ key: key.slice(-36), algorithm: 'HS256' })({ iss: a.id })}` } })
    expect((await call()).status).toBe(200)
    const kid = new RegExp(`/services/${a.id}/api-keys/([0-9a-f-]{36})/revoke`).exec(list.html)![1]
    expect((await v.post(`/services/${a.id}/api-keys/${kid}/revoke`)).status).toBe(302)
    expect((await call()).status).toBe(403)
    expect((await v.get(`/services/${a.id}/api-keys`)).html).not.toContain(`/api-keys/${kid}/revoke`)
    expect((await v.post(`/services/${a.id}/api-keys/${kid}/revoke`)).status).toBe(404)
  })

  it('will not revoke a key of another service', async () => {
    const { a, b, as } = await setup(w.db)
    const other = await as('other@agency.example')
    const made = await other.post(`/services/${b.id}/api-keys`, { name: 'Theirs', type: 'normal' })
    expect(made.status).toBe(200)
    const sender = await as('sender@agency.example')
    const kid = new RegExp(`/services/${b.id}/api-keys/([0-9a-f-]{36})/revoke`).exec((await other.get(`/services/${b.id}/api-keys`)).html)![1]
    expect((await sender.post(`/services/${a.id}/api-keys/${kid}/revoke`)).status).toBe(404)
    expect((await w.db.query('SELECT revoked_at FROM api_keys WHERE id = $1', [kid]))[0].revoked_at).toBeNull()
  })
})

describe('the console: send one-off', () => {
  it('asks for the number and each placeholder, refuses as the API does naming the field, and creates the notification', async () => {
    const { a, ta, as } = await setup(w.db)
    const v = await as('sender@agency.example')
    const form = await v.get(`/services/${a.id}/send/${ta.id}`)
    expect(form.status).toBe(200)
    expect(form.html).toContain('<label class="usa-label" for="p0">name</label>')
    const bad = await v.post(`/services/${a.id}/send/${ta.id}`, { phone_number: '555', p0: 'Ada' })
    expect(bad.status).toBe(400)
    expect(bad.html).toMatch(/id="phone_number-error"[^>]*>Phone number: Not enough digits/)
    const premium = await v.post(`/services/${a.id}/send/${ta.id}`, { phone_number: '+1 900 555 0100', p0: 'Ada' })
    expect(premium.status).toBe(400)
    expect(premium.html).toContain('Number is not valid')
    const empty = await v.post(`/services/${a.id}/send/${ta.id}`, { phone_number: '+1 212 555 0100', p0: ' ' })
    expect(empty.html).toMatch(/id="p0-error"[^>]*>Enter name/)
    expect((await w.db.query('SELECT count(*)::int AS n FROM notifications'))[0].n).toBe(0)

    const ok = await v.post(`/services/${a.id}/send/${ta.id}`, { phone_number: '(212) 555-0100', p0: 'Ada' })
    expect(ok.status).toBe(302)
    expect(ok.headers.get('location')).toMatch(new RegExp(`^/services/${a.id}/activity\\?sent=`))
    const [n] = await w.db.query('SELECT service_id, template_id, template_version, key_type, api_key_id, status FROM notifications')
    expect(n).toMatchObject({ service_id: a.id, template_id: ta.id, template_version: 1, key_type: 'normal', api_key_id: null, status: 'created' })
  })

  it('keeps the service’s daily limit, as the API does', async () => {
    const { a, ta, as } = await setup(w.db)
    await w.db.query('UPDATE services SET message_limit = 1 WHERE id = $1', [a.id])
    const v = await as('sender@agency.example')
    expect((await v.post(`/services/${a.id}/send/${ta.id}`, { phone_number: '+1 212 555 0100', p0: 'Ada' })).status).toBe(302)
    const over = await v.post(`/services/${a.id}/send/${ta.id}`, { phone_number: '+1 212 555 0101', p0: 'Bo' })
    expect(over.status).toBe(429)
    expect(over.html).toContain('Exceeded send limits (sms: 1) for today')
  })
})
