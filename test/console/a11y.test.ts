/**
 * Every page of the console in Chromium, signed in as a platform admin, over one scene (a service
 * with a template, a key, a team member and jobs; a person with an unresolved transfer, a file with
 * an error row, a failed file): each GET page of the URL map answers 200 with one h1 and passes
 * axe-core with no serious or critical violation. A page missing from the map fails by name.
 * With HERALD_SCREENSHOTS=1 the main pages are written to docs/console/.
 */
import type { Page } from 'playwright-core'
import { describe, expect, it } from 'vitest'
import { createInvitation } from '../../src/console/invitations.ts'
import { userIdByEmail } from '../../src/console/users.ts'
import { createKey, createService, createTemplate } from '../../src/messaging/services.ts'
import { makeUser } from '../helpers/console.ts'
import { exposureWorld } from '../helpers/exposure.ts'
import { secrets } from '../helpers/messaging.ts'
import { chromiumForFile, consoleOnce, describeViolations, h1Problem, pipelineScene, screenshot, seriousViolations, signIn } from './browser.ts'

const w = consoleOnce()
const chromium = chromiumForFile()
const ADMIN = 'admin@agency.example'

/** A GET page of the URL map; `:name` parts are filled from the scene. `shot`: its screenshot's name. */
interface Route { path: string; shot?: string; status?: number }
const ROUTES: Route[] = [
  { path: '/pipeline', shot: 'pipeline-home' },
  { path: '/pipeline/files', shot: 'files' },
  { path: '/pipeline/files/:fileId', shot: 'file' },
  { path: '/pipeline/people' },
  { path: '/pipeline/people?patient_key=:patientKey' },
  { path: '/pipeline/people?last_name=TESTLAST&first_name=TESTFIRST&dob=1947-03-01' },
  { path: '/pipeline/people/:personId', shot: 'person' },
  { path: '/pipeline/cases', shot: 'cases' },
  { path: '/pipeline/exposure', shot: 'exposure' },
  { path: '/services', shot: 'services' },
  { path: '/services/:sid' }, // its screenshot and activity's, with texts delivered, are e2e.test.ts's
  { path: '/services/:sid/templates', shot: 'templates' },
  { path: '/services/:sid/templates/new' },
  { path: '/services/:sid/templates/:tid', shot: 'template-editor' },
  { path: '/services/:sid/templates/:tid/versions' },
  { path: '/services/:sid/send/:tid', shot: 'send-one-off' },
  { path: '/services/:sid/api-keys', shot: 'api-keys' },
  { path: '/services/:sid/team', shot: 'team' },
  { path: '/services/:sid/upload/:tid', shot: 'upload' },
  { path: '/services/:sid/jobs/:checkJob/check', shot: 'upload-check' },
  { path: '/services/:sid/jobs' },
  { path: '/services/:sid/jobs/:jid' }, // its screenshot, delivered, is e2e.test.ts's
  { path: '/services/:sid/activity' },
  { path: '/services/:sid/activity?status=sending&phone=%2B12125550100' },
  { path: '/services/:sid/activity?status=nonsense', status: 400 }, // a form's error, as shown
  { path: '/services/:sid/usage' },
  { path: '/services/:sid/opt-outs' },
  { path: '/services/:sid/callbacks' },
  { path: '/account', shot: 'account' },
  { path: '/two-factor' },
  // The error page, as a person who types a wrong address sees it.
  { path: '/services/00000000-0000-4000-8000-000000000000', status: 404 },
]
/** Downloads of the map: answered as CSV, not pages. */
const DOWNLOADS = ['/pipeline/files/:fileId/errors.csv', '/services/:sid/jobs/:jid/report.csv', '/services/:sid/reports/notifications.csv', '/services/:sid/opt-outs.csv']

const ids: Record<string, string> = {}
let page: Page
/** Paths of the map that answered "no such page" (the route is not there yet). */
const missing: string[] = []
/** The path with the scene's ids; a path whose ids the scene could not make counts as missing. */
function fill(path: string) {
  const unfilled = (path.match(/:\w+/g) ?? []).filter((k) => !ids[k.slice(1)])
  if (unfilled.length) {
    missing.push(`${path} (not reached: the scene has no ${unfilled.join(', ')})`)
    throw new Error(`${path}: not checked: the scene has no ${unfilled.join(', ')} (see why the scene failed)`)
  }
  return path.replace(/:(\w+)/g, (_, k: string) => encodeURIComponent(ids[k]))
}

const GOOD_CSV = ['phone number,name,ref', '+1 212 555 0100,Ada,R1', '+1 212 555 0101,Bo,R2'].join('\n')
const BAD_CSV = ['phone number,name,ref', '+1 212 555 0100,Ada,R1', '12,Bo,R2', '+1 212 555 0102,,R3'].join('\n')

/** Uploads a CSV through the upload page; returns the job id from the check page it lands on. */
async function upload(csv: string, name: string) {
  const res = await page.goto(`${w.url}${fill('/services/:sid/upload/:tid')}`)
  if (res?.status() !== 200) throw new Error(`the upload page answered ${res?.status()}`)
  await page.locator('input[type=file]').setInputFiles({ name, mimeType: 'text/csv', buffer: Buffer.from(csv) })
  await Promise.all([page.waitForURL(/\/jobs\/[^/]+\/check/), page.locator('form:has(input[type=file]) [type=submit]').first().click()])
  return /\/jobs\/([^/]+)\/check/.exec(page.url())![1]
}

describe('every page of the console, in Chromium', () => {
  it('the check itself finds what it must: an input without a label, a link without words', async () => {
    const probe = await chromium.page()
    await probe.setContent('<!DOCTYPE html><html lang="en"><head><title>t</title></head><body><main><h1>t</h1><input type="text"><a href="/x"></a></main></body></html>')
    expect((await seriousViolations(probe)).map((v) => v.id).sort()).toEqual(['label', 'link-name'])
  })

  it('sign-in: the page a newcomer sees first, with how to make the first admin, and with an error', async () => {
    page = await chromium.page()
    await page.goto(`${w.url}/`)
    expect(new URL(page.url()).pathname).toBe('/sign-in')
    expect(await page.textContent('body')).toContain('herald user create --admin')
    await screenshot(page, 'sign-in')
    expect(describeViolations('/sign-in (no users yet)', await seriousViolations(page))).toBe('')
    await makeUser(w.db, ADMIN, { admin: true })
    await page.goto(`${w.url}/sign-in`)
    await page.getByLabel('Email address').fill(ADMIN)
    await page.getByLabel('Password').fill('not the password at all')
    await page.getByRole('button', { name: 'Sign in' }).click()
    await page.waitForSelector('.usa-alert--error')
    expect(describeViolations('/sign-in (wrong password)', await seriousViolations(page))).toBe('')
  })

  it('sets the scene: a service, template, key, team member and jobs; a person, files and cases', async () => {
    const service = await createService(w.db, { name: 'Test results', smsSender: 'NYSDOH' })
    const template = await createTemplate(w.db, service.id, 'Result ready', 'Hello ((name)), your test result is ready. Ref ((ref)).', ADMIN)
    await createKey(w.db, secrets, service.id, 'reporting system', 'normal')
    await makeUser(w.db, 'member@agency.example', { services: { [service.id]: ['view_activity', 'send_messages'] } })
    ids.invitation = await createInvitation(w.db, { serviceId: service.id, email: 'new@agency.example', permissions: ['view_activity'], invitedBy: await userIdByEmail(w.db, ADMIN) })
    const scene = await pipelineScene(w.db, w.dir)
    // Exposure notification against its sandboxes: the person's notice issued.
    expect(await (await exposureWorld()).run(w.db)).toMatchObject({ issued: 1 })
    Object.assign(ids, { sid: service.id, tid: template.id, personId: scene.personId, patientKey: scene.patientKey, fileId: scene.fileWithErrors })
    await signIn(page, w.url, ADMIN)
    // Jobs made as a person makes them: uploaded, checked, one left at its check page, one sent.
    try {
      ids.checkJob = await upload(BAD_CSV, 'with-problems.csv')
      ids.jid = await upload(GOOD_CSV, 'results.csv')
      await Promise.all([page.waitForURL(/\/jobs\/[^/]+$/), page.locator('form[action$="/start"] [type=submit]').first().click()])
    } catch (err) {
      throw new Error(`uploading a CSV through /services/:sid/upload/:tid failed, so the job pages cannot be checked: ${(err as Error).message.split('\n')[0]}`)
    }
  })

  for (const route of ROUTES) {
    it(`${route.path}: ${route.status ?? 200}, one h1, no serious accessibility violation`, async () => {
      const path = fill(route.path)
      const res = await page.goto(`${w.url}${path}`)
      const status = res?.status()
      const type = res?.headers()['content-type'] ?? ''
      if (status === 404 && (!type.includes('text/html') || !route.status)) {
        if (!type.includes('text/html')) missing.push(route.path)
        throw new Error(`${route.path}: no such page (404${type.includes('text/html') ? `: ${(await page.textContent('main'))?.trim().slice(0, 120)}` : ', the API\'s not-found'})`)
      }
      expect(status, `${path} answered ${status}`).toBe(route.status ?? 200)
      expect(new URL(page.url()).pathname, 'redirected elsewhere').toBe(path.split('?')[0])
      expect(await h1Problem(page), path).toBeUndefined()
      expect(await page.title(), 'the title names the page').toMatch(/\S+ – Herald$/)
      if (route.shot) await screenshot(page, route.shot)
      const found = await seriousViolations(page)
      expect(found.length, describeViolations(path, found)).toBe(0)
    })
  }

  it('/invitation/:token: the page an invited person opens, signed out', async () => {
    const guest = await chromium.page()
    const res = await guest.goto(`${w.url}${fill('/invitation/:invitation')}`)
    expect(res?.status()).toBe(200)
    expect(await h1Problem(guest)).toBeUndefined()
    const found = await seriousViolations(guest)
    expect(found.length, describeViolations('/invitation/:token', found)).toBe(0)
  })

  for (const download of DOWNLOADS) {
    it(`${download}: a CSV download`, async () => {
      const res = await page.request.get(`${w.url}${fill(download)}`)
      if (res.status() === 404 && !(res.headers()['content-type'] ?? '').includes('text/html')) missing.push(download)
      expect(res.status(), `${download} answered ${res.status()}`).toBe(200)
      expect(res.headers()['content-type']).toMatch(/text\/csv/)
    })
  }

  it('has every page of the URL map', () => {
    expect(missing, `pages of the URL map not there yet:\n  ${missing.join('\n  ')}`).toEqual([])
  })
})
