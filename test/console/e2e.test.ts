/**
 * Issue 17's flows in headless Chromium, from the browser alone once the first admin exists (made
 * as `herald user create --admin` makes it):
 * - an admin signs in, creates a service, a template and an API key (shown once), uploads a CSV with
 *   bad rows and sees each listed by row number, uploads a good one and sends it, watches the job
 *   reach delivered (the jobs, send and receipts engines run in this process against the SMS
 *   sandbox, as `herald start` runs them), and downloads the report;
 * - an operator (pipeline operate) retries a failed file and resolves an unresolved transfer.
 */
import type { FastifyInstance } from 'fastify'
import { readFileSync } from 'node:fs'
import { createSigner } from 'fast-jwt'
import type { Page } from 'playwright-core'
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import type { Engine } from '../../src/engine/engine.ts'
import { runEngines } from '../../src/engine/runner.ts'
import { startHttpServer } from '../../src/http/server.ts'
import { createLogger } from '../../src/log.ts'
import { computeFacts } from '../../src/messaging/facts/facts.ts'
import { jobsEngine } from '../../src/messaging/jobs/jobs.ts'
import { receiptsEngine } from '../../src/messaging/receipts/engine.ts'
import { receiptRoutes, receiptUrls } from '../../src/messaging/receipts/routes.ts'
import { sendEngine } from '../../src/messaging/send/engine.ts'
import { registerProviders } from '../../src/messaging/send/providers.ts'
import { TwilioSms } from '../../src/messaging/send/twilio.ts'
import { startSmsSandbox, type SmsSandbox } from '../../src/sandbox/sms/server.ts'
import { storeFor } from '../../src/storage/index.ts'
import { labResults, syncAll } from '../helpers/casesync.ts'
import { config, consoleWorld, makeUser } from '../helpers/console.ts'
import { SECRET } from '../helpers/exposure.ts'
import { tempDir } from '../helpers/files.ts'
import { sealer } from '../helpers/messaging.ts'
import { chromiumForFile, expectAccessible, pipelineScene, reloadUntil, screenshot, signIn, signOut, startingRate } from './browser.ts'

const w = consoleWorld()
const chromium = chromiumForFile()
const log = createLogger('silent')

/** The receipts endpoint the SMS sandbox calls back (Twilio signs the URL, so it is known before the server listens). */
let receipts: FastifyInstance
let publicUrl: string
beforeAll(async () => {
  receipts = await startHttpServer('127.0.0.1', 0, [])
  const a = receipts.server.address()
  const port = typeof a === 'object' && a ? a.port : 0
  publicUrl = `http://127.0.0.1:${port}`
  await receipts.close()
  receipts = await startHttpServer('127.0.0.1', port, [receiptRoutes({ db: w.db, log, publicUrl, secret: SECRET, twilioAuthToken: 'token' })])
})
afterAll(async () => receipts?.close())

let dir: string
let cleanup: () => void
beforeEach(async () => {
  ;({ dir, cleanup } = tempDir())
  await startingRate(w.db)
})
afterEach(() => cleanup())

/**
 * The engines `herald start` runs for messaging, in this process until stopped: jobs (uploaded files
 * to texts), send (to the Twilio sandbox), receipts (its callbacks applied).
 */
async function runMessaging() {
  const sms: SmsSandbox = await startSmsSandbox({ provider: 'twilio', accountSid: 'ACtest', authToken: 'token', seed: 17 })
  const provider = new TwilioSms({ url: sms.url, accountSid: 'ACtest', authToken: 'token', timeoutMs: 2000, callbackUrl: receiptUrls(publicUrl, SECRET).twilio })
  await registerProviders(w.db, ['twilio'])
  const engines: Engine[] = [
    jobsEngine({ sealer, region: 'US', store: storeFor(config.messaging.jobStore, config), workerId: 'e2e' }, log),
    sendEngine({ providers: [provider], sealer, region: 'US', concurrency: 4, recoverySeconds: 300, log, workerId: 'e2e' }),
    receiptsEngine(log),
  ]
  const stop = new AbortController()
  const running = runEngines(w.db, engines, { pollIntervalMs: 100, signal: stop.signal, log })
  return {
    sms,
    async stop() {
      stop.abort()
      await running
      await provider.close()
      await sms.close()
    },
  }
}

const main = (page: Page) => page.locator('main').innerText()

/** Submits the first form matching `form` with its button named `button` (else its first), waiting for the page that answers. */
async function submit(page: Page, form: string, button?: RegExp) {
  const f = page.locator(form).first()
  const b = button ? f.getByRole('button', { name: button }) : f.locator('[type=submit]').first()
  await Promise.all([page.waitForNavigation(), b.click()])
}

async function upload(page: Page, path: string, csv: string, name: string) {
  await page.goto(path)
  await page.locator('input[type=file]').setInputFiles({ name, mimeType: 'text/csv', buffer: Buffer.from(csv) })
  await submit(page, 'form:has(input[type=file])')
  expect(page.url()).toMatch(/\/jobs\/[^/]+\/check$/)
}

describe('the console end to end, in Chromium', () => {
  it('an admin sets up a service, template and key, uploads a CSV, sends it, watches it delivered and downloads the report', async () => {
    await makeUser(w.db, 'admin@agency.example', { admin: true })
    const page = await chromium.page()
    await signIn(page, w.url, 'admin@agency.example')

    // A service.
    await page.goto(`${w.url}/services`)
    await page.locator('form[action="/services"] [name=name]').fill('Test results')
    await page.locator('form[action="/services"] [name=sender]').fill('NYSDOH')
    await submit(page, 'form[action="/services"]')
    const [{ id: sid }] = await w.db.query(`SELECT id::text FROM services WHERE name = 'Test results'`)
    const base = `${w.url}/services/${sid}`
    await page.goto(base)
    expect(await page.locator('main').innerText()).toContain('Test results')

    // A template, with its preview.
    await page.goto(`${base}/templates/new`)
    await page.locator('main form [name=name]').fill('Result ready')
    await page.locator('main form textarea').fill('Hello ((name)), your test result is ready. Ref ((ref)).')
    await submit(page, 'main form', /save|create|add/i)
    const [{ id: tid }] = await w.db.query(`SELECT id::text FROM templates WHERE service_id = $1 AND name = 'Result ready'`, [sid])
    await page.goto(`${base}/templates/${tid}`)
    await page.locator('main form textarea').fill('Hello ((name)), your result is ready at the clinic. Ref ((ref)).')
    await submit(page, 'main form:has(textarea)', /preview/i)
    expect(await main(page)).toContain('your result is ready at the clinic')
    await expectAccessible(page, 'the template editor with its preview')

    // An API key: shown once, and it works.
    await page.goto(`${base}/api-keys`)
    await page.locator('main form [name=name]').first().fill('reporting system')
    await submit(page, 'main form:has([name=name])')
    const key = /[a-z0-9_]+-[0-9a-f-]{36}-[0-9a-f-]{36}/.exec(await main(page))?.[0]
    expect(key, 'the new key is shown').toBeDefined()
    await expectAccessible(page, 'the new key')
    await screenshot(page, 'api-key-created')
    await page.goto(`${base}/api-keys`)
    expect(await main(page)).not.toContain(key!)
    expect(await main(page)).toContain('reporting system')
    const jwt = createSigner({ key: key!.slice(-36), algorithm: 'HS256' })({ iss: sid })
    expect((await fetch(`${w.url}/v2/notifications`, { headers: { authorization: `Bearer ${jwt}` } })).status).toBe(200)

    // A CSV with bad rows: each problem listed with its row number, nothing sent.
    await upload(page, `${base}/upload/${tid}`, ['phone number,name,ref', '+1 212 555 0100,Ada,R1', '12,Bo,R2', '+1 212 555 0102,,R3'].join('\n'), 'problems.csv')
    const problems = await main(page)
    expect(problems).toMatch(/\b3\b[\s\S]*Not enough digits/i)
    expect(problems).toMatch(/\b4\b[\s\S]*name/i)
    await expectAccessible(page)
    expect((await w.db.query('SELECT count(*)::int AS n FROM notifications'))[0].n).toBe(0)

    // A good CSV: sent now; the job reaches delivered.
    const engines = await runMessaging()
    try {
      await upload(page, `${base}/upload/${tid}`, ['phone number,name,ref', ...[0, 1, 2].map((i) => `+1 212 555 010${i},Person ${i},R${i}`)].join('\n'), 'results.csv')
      await submit(page, 'form[action$="/start"]')
      expect(page.url()).toMatch(/\/jobs\/[^/]+$/)
      await reloadUntil(page, async () => /\b3\b\s*delivered/i.test(await main(page)), 30_000, 'the job\'s 3 texts to be delivered')
      expect(engines.sms.ledger.map((e) => e.to).sort()).toEqual(['+12125550100', '+12125550101', '+12125550102'])
    } finally {
      await engines.stop()
    }
    await expectAccessible(page)
    await screenshot(page, 'job')

    // The report.
    const [download] = await Promise.all([page.waitForEvent('download'), page.locator('a[href$="report.csv"]').first().click()])
    const report = readFileSync((await download.path())!, 'utf8')
    expect(report.split(/\r?\n/).filter((l) => /delivered/i.test(l))).toHaveLength(3)
    expect(report).toContain('0101')

    for (const [path, name] of [['', 'dashboard'], ['/activity', 'activity']]) {
      await page.goto(`${base}${path}`)
      expect(await main(page)).toMatch(/delivered/i)
      await screenshot(page, name)
    }
    // Usage comes from the nightly facts: computed now, for the days around today in any time zone.
    const day = (d: number) => new Date(Date.now() + d * 86_400_000).toISOString().slice(0, 10)
    await computeFacts(w.db, { from: day(-1), to: day(1) })
    await page.goto(`${base}/usage`)
    expect(await page.locator('main').innerText()).toMatch(/\$0\.02/) // 3 texts at $0.0079
    await screenshot(page, 'usage')

    await signOut(page)
  })

  it('an operator retries a failed file and resolves an unresolved transfer', async () => {
    const scene = await pipelineScene(w.db, dir)
    await makeUser(w.db, 'operator@agency.example', { pipeline: ['operate'] })
    const page = await chromium.page()
    await signIn(page, w.url, 'operator@agency.example')
    expect(new URL(page.url()).pathname).toBe('/pipeline')

    // The failed file: found in the files list, tried again.
    await page.goto(`${w.url}/pipeline/files`)
    expect(await main(page)).toContain(scene.failed.name)
    let retry = page.locator('main form[action$="/retry"]').filter({ has: page.locator('[type=submit]') })
    if ((await retry.count()) !== 1) {
      await Promise.all([page.waitForNavigation(), page.locator('main a', { hasText: scene.failed.name }).first().click()])
      retry = page.locator('main form[action$="/retry"]')
    }
    await Promise.all([page.waitForNavigation(), retry.first().locator('[type=submit]').click()])
    const [inbox] = await w.db.query('SELECT failed_at, attempts FROM inbox_files WHERE id = $1', [scene.failed.inboxId])
    expect(inbox).toEqual({ failed_at: null, attempts: 0 })
    await expectAccessible(page)

    // The unresolved transfer: the operator names the case it went to.
    await page.goto(`${w.url}/pipeline/cases`)
    const form = page.locator(`main form[action="/pipeline/cases/${scene.indexCase.id}/resolve"]`)
    await form.locator('[name=to]').fill(scene.copy.case_id)
    await Promise.all([page.waitForNavigation(), form.locator('[type=submit]').first().click()])
    expect(await w.db.query('SELECT resolved_to_case_id, resolved_to_domain FROM index_cases WHERE id = $1', [scene.indexCase.id]))
      .toEqual([{ resolved_to_case_id: scene.copy.case_id, resolved_to_domain: 'ny-allegany-cdcms' }])
    await expectAccessible(page)
    // The next case sync round posts the results to the copy in Allegany.
    expect(await syncAll(w.db, scene.casesync.out)).toEqual({ redirected: 1 })
    expect(labResults(scene.sandbox, 'ny-allegany-cdcms').map((r) => r.indices.parent.case_id)).toEqual([scene.copy.case_id, scene.copy.case_id])
  })
})
