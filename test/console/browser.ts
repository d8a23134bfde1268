/**
 * The console in a real browser, for the browser tests: Debian's Chromium driven by playwright-core,
 * axe-core's accessibility check run inside each page, and screenshots for docs/console/ when
 * HERALD_SCREENSHOTS=1 (`npm run console:screenshots`).
 *
 * Chromium runs headless with its background networking off: on a closed network its update, sync
 * and QUIC probes otherwise stall page loads.
 */
import { existsSync, mkdirSync, readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core'
import type { FastifyInstance } from 'fastify'
import { afterAll, beforeAll, expect } from 'vitest'
import { consoleFor } from '../../src/console/index.ts'
import type { Db } from '../../src/db/types.ts'
import { startHttpServer } from '../../src/http/server.ts'
import { claim as claimInbox, fail as failInbox, register } from '../../src/ingest/inbox.ts'
import { inboxQueue } from '../../src/ingest/queue.ts'
import { createLogger } from '../../src/log.ts'
import { messagingRoutes } from '../../src/messaging/index.ts'
import { storeFor } from '../../src/storage/index.ts'
import { caseOf, casesync, startSandbox, syncAll } from '../helpers/casesync.ts'
import { config, PASSWORD } from '../helpers/console.ts'
import { createTestDb, type TestDb } from '../helpers/db.ts'
import { exportText, row, tempDir, writeExport } from '../helpers/files.ts'
import { ingestPath, testConfig } from '../helpers/ingest.ts'
import { linkAll, resetDb } from '../helpers/link.ts'

export const CHROMIUM = process.env.HERALD_CHROMIUM || '/usr/bin/chromium'
const ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
  '--disable-component-update', '--disable-sync']
export const VIEWPORT = { width: 1280, height: 900 }
export const SCREENSHOTS = process.env.HERALD_SCREENSHOTS === '1'
const SHOTS_DIR = fileURLToPath(new URL('../../docs/console/', import.meta.url))
const AXE = readFileSync(join(createRequire(import.meta.url).resolve('axe-core'), '..', 'axe.min.js'), 'utf8')

/** One Chromium for the test file; `page()` opens a fresh context (its own cookies) at 1280x900. */
export function chromiumForFile() {
  let browser: Browser | undefined
  const contexts: BrowserContext[] = []
  beforeAll(async () => {
    if (!existsSync(CHROMIUM)) throw new Error(`no Chromium at ${CHROMIUM}: apt-get install -y chromium (or set HERALD_CHROMIUM to one)`)
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ARGS })
  })
  afterAll(async () => {
    for (const c of contexts) await c.close().catch(() => {})
    await browser?.close()
  })
  return {
    async page(): Promise<Page> {
      // bypassCSP: axe is injected as an inline script, which a strict Content-Security-Policy would refuse.
      const context = await browser!.newContext({ viewport: VIEWPORT, bypassCSP: true, acceptDownloads: true })
      contexts.push(context)
      const page = await context.newPage()
      page.setDefaultTimeout(15_000)
      return page
    },
  }
}

/** Signs in through the sign-in page as a person would; throws unless it leaves the sign-in page. */
export async function signIn(page: Page, base: string, email: string, password = PASSWORD) {
  await page.goto(`${base}/sign-in`)
  await page.getByLabel('Email address').fill(email)
  await page.getByLabel('Password').fill(password)
  await Promise.all([page.waitForURL((u) => !u.pathname.startsWith('/sign-in')), page.getByRole('button', { name: 'Sign in' }).click()])
}

export async function signOut(page: Page) {
  await Promise.all([page.waitForURL(/\/sign-in/), page.getByRole('button', { name: 'Sign out' }).click()])
}

interface AxeNode { target: unknown[]; failureSummary?: string }
export interface AxeViolation { id: string; impact: string | null; help: string; helpUrl: string; nodes: AxeNode[] }

/** axe-core's violations on the page as it is now, serious and critical ones only. */
export async function seriousViolations(page: Page): Promise<AxeViolation[]> {
  if (!(await page.evaluate(() => 'axe' in window))) await page.addScriptTag({ content: AXE })
  const violations = await page.evaluate(async () => {
    const axe = (window as unknown as { axe: { run: (ctx: Document, o: object) => Promise<{ violations: AxeViolation[] }> } }).axe
    return (await axe.run(document, { resultTypes: ['violations'] })).violations
  })
  return violations.filter((v) => v.impact === 'serious' || v.impact === 'critical')
}

/** The violations, one paragraph each: id, impact, help, where (the first few nodes). */
export function describeViolations(where: string, violations: AxeViolation[]): string {
  return violations.map((v) => `${where}: ${v.id} (${v.impact}): ${v.help}\n  ${v.helpUrl}\n` +
    v.nodes.slice(0, 3).map((n) => `  at ${JSON.stringify(n.target)}${n.failureSummary ? `\n    ${n.failureSummary.replace(/\n/g, '\n    ')}` : ''}`).join('\n') +
    (v.nodes.length > 3 ? `\n  ... and ${v.nodes.length - 3} more` : '')).join('\n')
}

/** Throws when axe finds a serious or critical violation on the page, naming each one. */
export async function expectAccessible(page: Page, where = new URL(page.url()).pathname) {
  const found = await seriousViolations(page)
  if (found.length > 0) throw new Error(`accessibility (axe-core) on ${where}:\n${describeViolations(where, found)}`)
}

/** The page's one h1, or a reason it has none or several. */
export async function h1Problem(page: Page): Promise<string | undefined> {
  const h1s = await page.locator('h1').allInnerTexts()
  if (h1s.length === 0) return 'no h1'
  if (h1s.length > 1) return `${h1s.length} h1 elements: ${h1s.join(' | ')}`
  if (!h1s[0].trim()) return 'an empty h1'
  return undefined
}

/**
 * A PNG of the page at 1280x900 as docs/console/NAME.png, when HERALD_SCREENSHOTS=1.
 * Only the first screen: what a person sees when the page opens.
 */
export async function screenshot(page: Page, name: string) {
  if (!SCREENSHOTS) return
  mkdirSync(SHOTS_DIR, { recursive: true })
  await page.screenshot({ path: join(SHOTS_DIR, `${name}.png`), fullPage: false, animations: 'disabled' })
}

/** Waits, reloading the page, until `check` holds (a job's progress, say); throws after `ms`. */
export async function reloadUntil(page: Page, check: () => Promise<boolean>, ms = 20_000, what = 'the page to change') {
  const end = Date.now() + ms
  while (!(await check())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what} on ${page.url()}`)
    await page.waitForTimeout(250)
    await page.reload()
  }
}

/**
 * The console for a file whose tests share one scene: one database, emptied once (county list
 * loaded), Herald's HTTP server (API and console) on a free loopback port, and a temporary folder.
 * (consoleWorld empties the database before each test: right for page tests, not for a tour.)
 */
export function consoleOnce() {
  const w = {} as { db: Db; url: string; dir: string }
  let t: TestDb
  let app: FastifyInstance
  let tmp: ReturnType<typeof tempDir>
  beforeAll(async () => {
    t = await createTestDb()
    await resetDb(t.db)
    await startingRate(t.db)
    tmp = tempDir()
    const log = createLogger('silent')
    app = await startHttpServer('127.0.0.1', 0, [messagingRoutes(config, t.db, log), consoleFor(config, t.db, log)])
    const a = app.server.address()
    Object.assign(w, { db: t.db, url: `http://127.0.0.1:${typeof a === 'object' && a ? a.port : 0}`, dir: tmp.dir })
  })
  afterAll(async () => {
    await app?.close()
    await t?.drop()
    tmp?.cleanup()
  })
  return w
}

/** The price per text migration 007 starts with, which emptying the tables removed: pages show costs as a new Herald does. */
export const startingRate = (db: Db) => db.query(`INSERT INTO sms_rates (valid_from, rate) VALUES ('2020-01-01', 0.0079) ON CONFLICT DO NOTHING`)

export const ALBANY = 'ny-albany-cdcms' // FIPS 1; Allegany is FIPS 3

/**
 * The pipeline as an operator finds it: a person with a case synced to CommCare (Albany) that was
 * then transferred to Allegany by hand (a copy not naming its source: an unresolved transfer), a file
 * with an error row, and a file that failed every attempt to read it.
 */
export async function pipelineScene(db: Db, dir: string, key = 'PK-SCENE-1') {
  const s = await startSandbox()
  const cs = casesync(s)
  // Named as ECLRS names its exports: the files page shows these names.
  const receive = async (name: string, rows: string[][]) => {
    await ingestPath(db, writeExport(dir, name, exportText(3, rows)))
    await linkAll(db)
  }
  await receive('ECLRS_20260318_0630.txt', [row(3, { PIDPATIENTKEY: key, PIDCOUNTYCODE: '1', OBRACCESSIONNUM: `${key}-A1` })])
  expect(await syncAll(db, cs.out)).toEqual({ posted: 1 })
  const c = await caseOf(db)
  const copy = s.transfer(ALBANY, c.case_id, 3, { linkSource: false })!
  await receive('ECLRS_20260318_1430.txt', [row(3, { PIDPATIENTKEY: key, PIDCOUNTYCODE: '1', OBRACCESSIONNUM: `${key}-A2` }),
    row(3, { PIDPATIENTKEY: `${key}-BAD`, PIDDATEOFBIRTH: 'not a date' })])
  expect(await syncAll(db, cs.out)).toEqual({ unresolved_transfer: 1 })
  const failed = await failedInboxFile(db, dir, 'ECLRS_20260319_0630.txt')
  const [person] = await db.query('SELECT person_id::text AS id FROM person_keys WHERE patient_key = $1', [key])
  const [file] = await db.query('SELECT id::text FROM files WHERE error_rows > 0 ORDER BY id LIMIT 1')
  return { sandbox: s, casesync: cs, indexCase: c, copy, personId: person.id as string, patientKey: key, fileWithErrors: file?.id as string, failed }
}

/** An inbox file that failed every attempt (its storage "unreachable"): left failed for an operator. */
export async function failedInboxFile(db: Db, dir: string, name: string) {
  const path = writeExport(dir, name, exportText(3, [row(3, { PIDCOUNTYCODE: '1' })]))
  const objects = []
  for await (const o of storeFor(path, testConfig).list()) objects.push(o)
  const [id] = await register(db, objects)
  for (let attempt = 1; attempt <= inboxQueue.retry.maxAttempts; attempt++) {
    await db.query('UPDATE inbox_files SET retry_at = NULL WHERE id = $1', [id]) // past the backoff
    const item = await claimInbox(db, 'scene', 60) // as an engine claims: naming the file would retry it
    if (!item) throw new Error(`inbox file ${id} could not be claimed`)
    await failInbox(db, item, 'scene', 'storage unreachable')
  }
  return { inboxId: String(id), name, path }
}
