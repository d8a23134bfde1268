/**
 * A service's activity in the console (by status, newest first, found by phone number through the
 * keyed hash), its usage by month, and the notifications report; permissions.
 */
import { createSigner } from 'fast-jwt'
import { describe, expect, it } from 'vitest'
import { computeFacts } from '../../src/messaging/facts/facts.ts'
import { createKey, createService, createTemplate, type Service } from '../../src/messaging/services.ts'
import { consoleWorld, makeUser, Visitor } from '../helpers/console.ts'
import { secrets } from '../helpers/messaging.ts'

const w = consoleWorld()
const NUMBERS = ['+1 212 555 0100', '+1 212 555 0101', '+1 212 555 0102', '+1 212 555 0103']

/** Texts sent through the API with a live key (and one with a test key, which activity leaves out); statuses set as receipts would. */
async function setUp() {
  const service = await createService(w.db, { name: 'Test results', smsSender: 'NYSDOH' })
  const other = await createService(w.db, { name: 'Other county', smsSender: 'OTHER' })
  const template = await createTemplate(w.db, service.id, 'Result ready', 'Hello ((name)), your result is ready.', 'tester')
  const send = async (s: Service, key: string, phone: string) => {
    const jwt = createSigner({ key: key.slice(-36), algorithm: 'HS256' })({ iss: s.id })
    const res = await fetch(`${w.url}/v2/notifications/sms`, {
      method: 'POST', headers: { authorization: `Bearer ${jwt}`, 'content-type': 'application/json' },
      body: JSON.stringify({ phone_number: phone, template_id: template.id, personalisation: { name: 'Ada' } }),
    })
    expect(res.status).toBe(201)
    return ((await res.json()) as { id: string }).id
  }
  const live = (await createKey(w.db, secrets, service.id, 'live', 'normal')).key
  const ids = []
  for (const n of NUMBERS) ids.push(await send(service, live, n))
  await send(service, (await createKey(w.db, secrets, service.id, 'test', 'test')).key, '+1 212 555 0199')
  await w.db.query(`UPDATE notifications SET status = 'delivered', billable_units = 2, rate_multiplier = 1 WHERE id = ANY($1)`, [ids.slice(0, 2)])
  await w.db.query(`UPDATE notifications SET status = 'permanent-failure', billable_units = 1, rate_multiplier = 1 WHERE id = $1`, [ids[2]])
  await makeUser(w.db, 'viewer@agency.example', { services: { [service.id]: ['view_activity'] } })
  await makeUser(w.db, 'sender@agency.example', { services: { [service.id]: ['send_messages'] } })
  await makeUser(w.db, 'outsider@agency.example', { services: { [other.id]: ['view_activity', 'send_messages'] } })
  return { service, other, base: `/services/${service.id}` }
}

const shownNumbers = (html: string) => NUMBERS.filter((n) => html.includes(`<th scope="row">${n}</th>`))

describe('the console: activity, usage and reports', () => {
  it('lists the texts by status, newest first, with counts; the test key’s text is left out', async () => {
    const { base } = await setUp()
    const v = await new Visitor(w.url).signIn('viewer@agency.example')
    const all = await v.get(`${base}/activity`)
    expect(all.status).toBe(200)
    expect(all.html).toContain('All (4)')
    expect(all.html).toContain('Sending (1)')
    expect(all.html).toContain('Delivered (2)')
    expect(all.html).toContain('Failed (1)')
    expect(shownNumbers(all.html)).toEqual(NUMBERS)
    const order = NUMBERS.map((n) => all.html.indexOf(n))
    expect([...order].sort((a, b) => b - a)).toEqual(order) // newest first
    expect(all.html).not.toContain('555 0199')
    const failed = await v.get(`${base}/activity?status=failed`)
    expect(shownNumbers(failed.html)).toEqual([NUMBERS[2]])
    expect(failed.html).toContain('permanent-failure')
    expect((await v.get(`${base}/activity?status=lost`)).status).toBe(400)
  })

  it('finds a number by its keyed hash however it is typed, and shows no other', async () => {
    const { base } = await setUp()
    const v = await new Visitor(w.url).signIn('viewer@agency.example')
    const found = await v.get(`${base}/activity?phone=${encodeURIComponent('(212) 555-0101')}`)
    expect(found.status).toBe(200)
    expect(shownNumbers(found.html)).toEqual([NUMBERS[1]])
    expect(found.html).toContain('All (1)')
    const none = await v.get(`${base}/activity?phone=${encodeURIComponent('+1 212 555 0150')}`)
    expect(shownNumbers(none.html)).toEqual([])
    expect(none.html).toContain('No messages to show')
    const bad = await v.get(`${base}/activity?phone=call+me`)
    expect(bad.status).toBe(400)
    expect(bad.html).toContain('id="phone-error"')
    expect(bad.html).toContain('usa-input--error')
  })

  it('shows usage and cost by month from the facts, and downloads the notifications report', async () => {
    const { service, base } = await setUp()
    const today = new Intl.DateTimeFormat('en-CA', { timeZone: service.timezone }).format(new Date())
    await computeFacts(w.db, { from: today, to: today })
    const v = await new Visitor(w.url).signIn('viewer@agency.example')
    const year = Number(today.slice(0, 4))
    const usage = await v.get(`${base}/usage?year=${year}`)
    expect(usage.status).toBe(200)
    const month = new Date(`${today}T12:00:00Z`).toLocaleString('en-US', { month: 'long', timeZone: 'UTC' })
    // 3 texts handed over (delivered, delivered, failed: 2 + 2 + 1 parts); the one still to send is not billed.
    expect(usage.html).toMatch(new RegExp(`<th scope="row">${month}</th><td class="text-right">3</td><td class="text-right">5</td>`))
    expect((await v.get(`${base}/usage?year=${year - 1}`)).html).not.toMatch(/<td class="text-right">[1-9]/)
    expect((await v.get(`${base}/usage?year=next`)).status).toBe(400)

    const report = await v.get(`${base}/reports/notifications.csv`)
    expect(report.status).toBe(200)
    expect(report.headers.get('content-disposition')).toMatch(/attachment; filename="notifications-.*\.csv"/)
    const lines = report.html.trim().split('\n')
    expect(lines[0]).toMatch(/^Phone number,Template,Status/)
    expect(lines).toHaveLength(1 + NUMBERS.length) // the test key's text is not in it
    expect(lines.slice(1).map((l) => l.split(',')[0]).sort()).toEqual(NUMBERS.map((n) => `'${n}`))
    expect((await v.get(`${base}/reports/notifications.csv?from=2026-02-31`)).status).toBe(400)
  })

  it('needs view_activity; another service’s texts are not shown', async () => {
    const { base, other } = await setUp()
    const sender = await new Visitor(w.url).signIn('sender@agency.example')
    for (const path of ['/activity', '/usage', '/reports/notifications.csv']) expect((await sender.get(`${base}${path}`)).status).toBe(403)
    const outsider = await new Visitor(w.url).signIn('outsider@agency.example')
    for (const path of ['/activity', '/usage', '/reports/notifications.csv']) {
      const r = await outsider.get(`${base}${path}`)
      expect(r.status).toBe(403)
      expect(shownNumbers(r.html)).toEqual([])
    }
    // Its own service's activity, searched for this service's number: nothing.
    const own = await outsider.get(`/services/${other.id}/activity?phone=${encodeURIComponent(NUMBERS[0])}`)
    expect(own.status).toBe(200)
    expect(shownNumbers(own.html)).toEqual([])
    const ownReport = await outsider.get(`/services/${other.id}/reports/notifications.csv`)
    expect(ownReport.html.trim().split('\n')).toHaveLength(1)
  })
})
