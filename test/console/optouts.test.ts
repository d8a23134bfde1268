/** A service's opt-outs in the console: the count and dates for its viewers, the numbers (page and CSV) for its managers only. */
import { describe, expect, it } from 'vitest'
import { setInboundNumber } from '../../src/messaging/inbound/numbers.ts'
import { receiveText } from '../../src/messaging/inbound/receive.ts'
import { createService } from '../../src/messaging/services.ts'
import { consoleWorld, makeUser, Visitor } from '../helpers/console.ts'
import { sealer } from '../helpers/messaging.ts'

const w = consoleWorld()

async function setUp() {
  const service = await createService(w.db, { name: 'Test results', smsSender: 'NYSDOH' })
  const other = await createService(w.db, { name: 'Other county' })
  await setInboundNumber(w.db, service.id, '+12125550000')
  let ref = 0
  const receive = (from: string, body: string) => receiveText(w.db, sealer, { provider: 'twilio', ref: `SM${++ref}`, from, to: '+12125550000', body })
  await receive('+12125550101', 'STOP')
  await receive('+12125550102', 'unsubscribe')
  await receive('+12125550103', 'STOP')
  await receive('+12125550103', 'START')
  await receive('+12125550104', 'When is my appointment?')
  await makeUser(w.db, 'viewer@agency.example', { services: { [service.id]: ['view_activity'] } })
  await makeUser(w.db, 'manager@agency.example', { services: { [service.id]: ['view_activity', 'manage_service'] } })
  await makeUser(w.db, 'outsider@agency.example', { services: { [other.id]: ['view_activity', 'manage_service'] } })
  return { service, base: `/services/${service.id}` }
}

describe('console opt-outs', () => {
  it('shows viewers how many opted out and when, without the numbers', async () => {
    const { base } = await setUp()
    const v = await new Visitor(w.url).signIn('viewer@agency.example')
    const page = await v.get(`${base}/opt-outs`)
    expect(page.status).toBe(200)
    expect(page.html).toContain(`href="${base}/opt-outs"`) // in the service's navigation
    expect(page.html).toMatch(/>2<\/p>\s*<p class="margin-top-0">numbers have opted out/)
    expect(page.html).toContain('+12125550000')
    expect(page.html).toContain('UNSUBSCRIBE')
    for (const n of ['+12125550101', '+12125550102', '+12125550103']) expect(page.html).not.toContain(n)
    expect((await v.get(`${base}/opt-outs.csv`)).status).toBe(403)
  })

  it("shows the service's managers the numbers, and gives them as CSV", async () => {
    const { base } = await setUp()
    const v = await new Visitor(w.url).signIn('manager@agency.example')
    const page = await v.get(`${base}/opt-outs`)
    expect(page.html).toContain('+12125550101')
    expect(page.html).toContain('+12125550102')
    expect(page.html).not.toContain('+12125550103') // opted back in
    const csv = await v.get(`${base}/opt-outs.csv`)
    expect(csv.headers.get('content-type')).toBe('text/csv; charset=utf-8')
    const lines = csv.html.trim().split('\n')
    expect(lines[0]).toBe('Phone number,Keyword,Opted out at')
    // Numbers start with '+': written so that a spreadsheet keeps them as text.
    expect(lines.slice(1).map((l) => l.split(',').slice(0, 2)).sort()).toEqual([["'+12125550101", 'STOP'], ["'+12125550102", 'UNSUBSCRIBE']])
  })

  it('is not shown outside the service', async () => {
    const { base } = await setUp()
    const v = await new Visitor(w.url).signIn('outsider@agency.example')
    expect((await v.get(`${base}/opt-outs`)).status).toBe(403)
    expect((await v.get(`${base}/opt-outs.csv`)).status).toBe(403)
  })
})
