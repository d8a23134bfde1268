/** The console's template editor: create, edit (a version each save), versions, and the preview with fragments and cost. */
import { describe, expect, it } from 'vitest'
import { createService } from '../../src/messaging/services.ts'
import { consoleWorld, makeUser, Visitor } from '../helpers/console.ts'
import { chromiumForFile, signIn } from './browser.ts'

const w = consoleWorld()
const chromium = chromiumForFile()

async function setup() {
  await w.db.query(`INSERT INTO sms_rates (valid_from, rate) VALUES ('2020-01-01', 0.0079)`)
  const a = await createService(w.db, { name: 'Test results', smsSender: 'NYSDOH' })
  await makeUser(w.db, 'editor@agency.example', { services: { [a.id]: ['manage_templates'] } })
  await makeUser(w.db, 'viewer@agency.example', { services: { [a.id]: ['view_activity'] } })
  return { a, editor: await new Visitor(w.url).signIn('editor@agency.example') }
}

describe('the console: templates', () => {
  it('creates a template, saves a new version on each change, and lists the versions', async () => {
    const { a, editor } = await setup()
    expect((await editor.get(`/services/${a.id}/templates/new`)).status).toBe(200)
    const noName = await editor.post(`/services/${a.id}/templates/new`, { name: '', body: 'Hi', action: 'save' })
    expect(noName.status).toBe(400)
    expect(noName.html).toMatch(/id="name-error"[^>]*>Enter a template name/)
    const tooLong = await editor.post(`/services/${a.id}/templates/new`, { name: 'Long', body: 'x'.repeat(919), action: 'save' })
    expect(tooLong.html).toMatch(/id="body-error"[^>]*>Message must be 918 characters or fewer/)

    const made = await editor.post(`/services/${a.id}/templates/new`, { name: 'Result ready', body: 'Hello ((name)), your result is ready.', action: 'save' })
    expect(made.status).toBe(302)
    const page = made.headers.get('location')!
    const tid = new RegExp(`/services/${a.id}/templates/([0-9a-f-]{36})`).exec(page)![1]
    const shown = await editor.get(page)
    expect(shown.html).toContain('Template saved (version 1)')
    expect(shown.html).toContain('Hello ((name)), your result is ready.')

    expect((await editor.post(`/services/${a.id}/templates/${tid}`, { name: 'Result ready', body: 'Hi ((name)): your result is in.', action: 'save' })).status).toBe(302)
    expect((await editor.post(`/services/${a.id}/templates/${tid}`, { name: 'Result ready', body: 'Hi ((name)): your result is in.', action: 'save' })).status).toBe(302)
    expect((await editor.get(`/services/${a.id}/templates/${tid}`)).html).toContain('Version 2')
    const versions = await editor.get(`/services/${a.id}/templates/${tid}/versions`)
    expect(versions.status).toBe(200)
    expect(versions.html).toContain('Version 2 (current)')
    expect(versions.html).toContain('Version 1<')
    expect(versions.html).toContain('Hello ((name)), your result is ready.')
    expect(versions.html).toContain('by editor@agency.example')
    const list = await editor.get(`/services/${a.id}/templates`)
    expect(list.html).toContain('Result ready')
  })

  it('previews without saving: the text, 2 fragments for 161 GSM characters, 1 for 160, Unicode at 70, and the cost', async () => {
    const { a, editor } = await setup()
    const preview = (body: string) => editor.post(`/services/${a.id}/templates/new`, { name: 'P', body, action: 'preview' })
    const long = await preview(`Dear ((name)) ${'a'.repeat(161 - 'Dear ((name)) '.length)}`)
    expect(long.status).toBe(200)
    expect(long.html).toMatch(/data-preview="fragments">2</)
    expect(long.html).toMatch(/data-preview="units">161</)
    expect(long.html).toMatch(/data-preview="cost">\$0\.0158</)
    expect(long.html).toContain('Dear ((name)) aaa')
    expect((await preview('a'.repeat(160))).html).toMatch(/data-preview="fragments">1</)
    const unicode = await preview('ü'.repeat(69) + '—')
    expect(unicode.html).toMatch(/data-preview="fragments">1</)
    expect(unicode.html).toContain('Unicode')
    expect((await preview('—'.repeat(71))).html).toMatch(/data-preview="fragments">2</)
    expect((await w.db.query('SELECT count(*)::int AS n FROM templates'))[0].n).toBe(0)

    // What the script asks as you type: the same numbers, as JSON, with the CSRF token in a header.
    const csrf = /name="_csrf" value="([^"]+)"/.exec(editor.lastHtml)![1]
    const json = await editor.post(`/services/${a.id}/templates/preview`, { _csrf: csrf, body: 'x'.repeat(161) })
    expect(json.status).toBe(200)
    expect(JSON.parse(json.html)).toMatchObject({ fragments: 2, units: 161, encoding: 'gsm', cost: '$0.0158' })
  })

  it('shows templates to any member, lets only manage_templates edit, and finds no template of another service', async () => {
    const { a, editor } = await setup()
    const made = await editor.post(`/services/${a.id}/templates/new`, { name: 'Mine', body: 'Hello', action: 'save' })
    const tid = /templates\/([0-9a-f-]{36})/.exec(made.headers.get('location')!)![1]
    const viewer = await new Visitor(w.url).signIn('viewer@agency.example')
    const seen = await viewer.get(`/services/${a.id}/templates/${tid}`)
    expect(seen.status).toBe(200)
    expect(seen.html).not.toContain('<textarea')
    expect((await viewer.get(`/services/${a.id}/templates/new`)).status).toBe(403)
    expect((await viewer.post(`/services/${a.id}/templates/${tid}`, { name: 'Mine', body: 'Changed', action: 'save' })).status).toBe(403)
    const b = await createService(w.db, { name: 'Elsewhere' })
    await makeUser(w.db, 'b@agency.example', { services: { [b.id]: ['manage_templates'] } })
    const outsider = await new Visitor(w.url).signIn('b@agency.example')
    const edit = await outsider.post(`/services/${b.id}/templates/${tid}`, { name: 'Stolen', body: 'Changed', action: 'save' })
    expect(edit.status).toBe(404)
    expect((await outsider.get(`/services/${b.id}/templates/${tid}/versions`)).status).toBe(404)
    expect((await w.db.query('SELECT version, body FROM templates WHERE id = $1', [tid]))[0]).toEqual({ version: 1, body: 'Hello' })
  })
})

describe('the console: the template editor in a browser', () => {
  it('updates the preview, the fragment count and the cost as you type (console.js)', async () => {
    const { a } = await setup()
    const page = await chromium.page()
    await signIn(page, w.url, 'editor@agency.example')
    await page.goto(`${w.url}/services/${a.id}/templates/new`)
    await page.getByLabel('Message').fill(`Hi ((name)) ${'b'.repeat(150)}`)
    await page.locator('[data-preview="fragments"]').filter({ hasText: '2' }).waitFor()
    expect(await page.locator('[data-preview="text"]').textContent()).toContain('Hi ((name)) bbb')
    expect(await page.locator('[data-preview="cost"]').textContent()).toBe('$0.0158')
    await page.getByLabel('Message').fill('Hi ((name))')
    await page.locator('[data-preview="fragments"]').filter({ hasText: '1' }).waitFor()
    expect(await page.locator('[data-preview="units"]').textContent()).toBe('11')
  })
})
