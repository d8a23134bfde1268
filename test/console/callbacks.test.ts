/** The console's Callbacks page: set, change and remove a service's callbacks (tokens never shown), its last failures; manage_service only. */
import { describe, expect, it } from 'vitest'
import { listCallbacks } from '../../src/messaging/callbacks/settings.ts'
import { createService } from '../../src/messaging/services.ts'
import { consoleWorld, makeUser, Visitor } from '../helpers/console.ts'
import { sealer } from '../helpers/messaging.ts'

const w = consoleWorld()
const TOKEN = 'console-token-123456'

async function setup() {
  const a = await createService(w.db, { name: 'Test results', smsSender: 'NYSDOH' })
  const b = await createService(w.db, { name: 'Flu clinic reminders' })
  await makeUser(w.db, 'manager@agency.example', { services: { [a.id]: ['manage_service', 'view_activity'] } })
  await makeUser(w.db, 'viewer@agency.example', { services: { [a.id]: ['view_activity', 'manage_api_keys'] } })
  await makeUser(w.db, 'other@agency.example', { services: { [b.id]: ['manage_service'] } })
  return { a, b, manager: await new Visitor(w.url).signIn('manager@agency.example') }
}

describe('the console: callbacks', () => {
  it('sets, changes and removes a callback; the token is sealed and never shown', async () => {
    const { a, manager } = await setup()
    const page = await manager.get(`/services/${a.id}/callbacks`)
    expect(page.status).toBe(200)
    expect(page.html).toContain('Delivery receipts')
    expect(page.html).toContain('Received text messages')
    expect(page.html).toContain(`href="/services/${a.id}/callbacks" class="usa-current"`)
    const set = await manager.post(`/services/${a.id}/callbacks/delivery_status`, { url: 'https://cases.example.gov/notify', bearer_token: TOKEN })
    expect(set.status).toBe(302)
    const shown = await manager.get(`/services/${a.id}/callbacks`)
    expect(shown.html).toContain('https://cases.example.gov/notify')
    expect(shown.html).not.toContain(TOKEN)
    const [row] = await w.db.query('SELECT token_ct FROM service_callbacks')
    expect(sealer.open(Buffer.from(row.token_ct))).toBe(TOKEN)

    expect((await manager.post(`/services/${a.id}/callbacks/delivery_status`, { url: 'https://cases.example.gov/v2', bearer_token: 'another-token-99' })).status).toBe(302)
    expect(await listCallbacks(w.db, a.id)).toMatchObject([{ kind: 'delivery_status', url: 'https://cases.example.gov/v2' }])
    expect((await manager.post(`/services/${a.id}/callbacks/delivery_status/remove`)).status).toBe(302)
    expect(await listCallbacks(w.db, a.id)).toEqual([])
    expect((await manager.post(`/services/${a.id}/callbacks/delivery_status/remove`)).status).toBe(404)
    expect((await manager.post(`/services/${a.id}/callbacks/letters`, { url: 'https://x.example/', bearer_token: TOKEN })).status).toBe(404)
  })

  it('bad input: the field named, the URL kept, the token not echoed', async () => {
    const { a, manager } = await setup()
    const bad = await manager.post(`/services/${a.id}/callbacks/inbound_sms`, { url: 'http://cases.example.gov/in', bearer_token: TOKEN })
    expect(bad.status).toBe(400)
    expect(bad.html).toMatch(/id="inbound_sms-url-error"[^>]*>Enter a URL that starts with https:\/\//)
    expect(bad.html).toContain('value="http://cases.example.gov/in"')
    expect(bad.html).not.toContain(TOKEN)
    const short = await manager.post(`/services/${a.id}/callbacks/inbound_sms`, { url: 'https://cases.example.gov/in', bearer_token: 'short' })
    expect(short.status).toBe(400)
    expect(short.html).toMatch(/id="inbound_sms-token-error"[^>]*>Enter a bearer token of at least 10 characters/)
    expect(await listCallbacks(w.db, a.id)).toEqual([])
  })

  it('lists the service’s last failed callbacks with their answer, and no other service’s', async () => {
    const { a, b, manager } = await setup()
    const failed = (service: string, error: string) => w.db.query(`INSERT INTO callback_queue (service_id, kind, subject_id, status, attempts, last_error, failed_at)
      VALUES ($1, 'delivery_status', gen_random_uuid(), 'delivered', 1, $2, now()) RETURNING subject_id`, [service, error])
    const [mine] = await failed(a.id, 'answered HTTP 400: not retried')
    await failed(b.id, 'answered HTTP 418: not retried')
    const page = await manager.get(`/services/${a.id}/callbacks`)
    expect(page.html).toContain('answered HTTP 400: not retried')
    expect(page.html).toContain(mine.subject_id)
    expect(page.html).not.toContain('HTTP 418')
  })

  it('needs manage_service: others are refused, and the navigation shows the page to managers only', async () => {
    const { a, manager } = await setup()
    const viewer = await new Visitor(w.url).signIn('viewer@agency.example')
    expect((await viewer.get(`/services/${a.id}/callbacks`)).status).toBe(403)
    expect((await viewer.post(`/services/${a.id}/callbacks/delivery_status`, { url: 'https://evil.example/', bearer_token: TOKEN })).status).toBe(403)
    expect((await viewer.post(`/services/${a.id}/callbacks/delivery_status/remove`)).status).toBe(403)
    expect((await viewer.get(`/services/${a.id}/api-keys`)).html).not.toContain(`/services/${a.id}/callbacks`)
    expect((await manager.get(`/services/${a.id}`)).html).toContain(`/services/${a.id}/callbacks`)
    const other = await new Visitor(w.url).signIn('other@agency.example')
    expect((await other.get(`/services/${a.id}/callbacks`)).status).toBe(403)
    expect(await listCallbacks(w.db, a.id)).toEqual([])
  })
})
