/** Logs never contain PII: ingest, link, sync and notify the fixtures through the engines and scan everything they logged. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { Writable } from 'node:stream'
import { readdirSync, readFileSync } from 'node:fs'
import { casesyncInEngine, casesyncOutEngine, commcareClient } from '../src/casesync/index.ts'
import { loadConfig } from '../src/config.ts'
import { runEngines } from '../src/engine/runner.ts'
import { LookupClient, VerificationClient } from '../src/exposure/clients.ts'
import { exposureEngines } from '../src/exposure/index.ts'
import { ingestEngine } from '../src/ingest/index.ts'
import { linkEngine } from '../src/link/index.ts'
import { createLogger, errorText } from '../src/log.ts'
import { startLookupSandbox } from '../src/sandbox/lookup/server.ts'
import { startVerificationSandbox } from '../src/sandbox/verification/server.ts'
import { createTestDb, type TestDb } from './helpers/db.ts'
import { FIXTURES, copyFixture, tempDir, writeExport } from './helpers/files.ts'
import { startSandbox } from './helpers/casesync.ts'
import { SECRET } from './helpers/exposure.ts'
import { loadCounties } from './helpers/link.ts'

let t: TestDb
const tmp = tempDir()
beforeAll(async () => (t = await createTestDb()))
afterAll(async () => {
  await t.drop()
  tmp.cleanup()
})

describe('errorText', () => {
  it('names a database error by its SQLSTATE only, and keeps other errors as they are', () => {
    const db = Object.assign(new Error('date/time field value out of range: "0000-03-01"'), { code: '22008', table: 'lab_rows' })
    expect(errorText(db)).toBe('database error 22008 on lab_rows (data exception)')
    const fs = Object.assign(new Error("EXDEV: cross-device link not permitted, rename 'a' -> 'b'"), { code: 'EXDEV' })
    expect(errorText(fs)).toBe(fs.message)
  })
})

describe('logs', () => {
  it('name files and counts, never the people in them', async () => {
    for (const f of readdirSync(FIXTURES)) copyFixture(f, tmp.dir)
    writeExport(tmp.dir, 'bad.txt', readFileSync(FIXTURES + 'new_records.txt', 'utf8').replace('MAIN St|', 'MAIN St|x|'))
    let captured = ''
    const sink = new Writable({ write(chunk, _e, done) { captured += chunk; done() } })
    const log = createLogger('debug', sink)
    log.info({ phone: '5551234567', row: { last_name: 'SMITH' } }, 'a careless line is censored')
    // CommCare fails at first, so that failed attempts are logged too; then it takes the retries.
    // The verification server too fails every code at first.
    const sandbox = await startSandbox({ failureRate: 1 })
    const enx = await startVerificationSandbox({ apiKey: 'enx-key', failures: { sms_failure: 1 } })
    const lookup = await startLookupSandbox({ accountSid: 'ACtest', authToken: 'token' })
    const config = loadConfig({ HERALD_INBOX: tmp.dir, HERALD_WORKER_ID: 'log-test', HERALD_COMMCARE_URL: sandbox.url,
      HERALD_COMMCARE_USER: 'herald', HERALD_COMMCARE_API_KEY: 'sandbox', HERALD_COMMCARE_ROOT_DOMAIN: 'ny-covid',
      HERALD_ENX_URL: enx.url, HERALD_ENX_API_KEY: 'enx-key', HERALD_LOOKUP_URL: lookup.url, HERALD_TWILIO_ACCOUNT_SID: 'ACtest',
      HERALD_TWILIO_AUTH_TOKEN: 'token', HERALD_SECRET_KEY: SECRET })
    const client = commcareClient(config, sandbox.url)
    const services = {
      verification: new VerificationClient({ url: enx.url, apiKey: 'enx-key', timeoutMs: 2000 }),
      lookup: new LookupClient({ url: lookup.url, accountSid: 'ACtest', authToken: 'token', timeoutMs: 2000 }),
    }
    await new Promise((r) => setTimeout(r, 2100)) // past the settle delay for fresh files
    await loadCounties(t.db)
    const engines = [ingestEngine(config, log), linkEngine(config, log), casesyncOutEngine(config, log, client), casesyncInEngine(config, log, client),
      ...exposureEngines(config, log, services)]
    try {
      await runEngines(t.db, engines, { untilIdle: true, pollIntervalMs: 100, signal: new AbortController().signal, log })
      sandbox.knobs.failureRate = 0
      enx.knobs.failures.sms_failure = 0
      await t.db.query('UPDATE case_sync_queue SET retry_at = now()')
      await t.db.query('UPDATE commcare_cursors SET retry_at = NULL')
      await t.db.query('UPDATE exposure_notices SET retry_at = now() WHERE retry_at IS NOT NULL')
      await runEngines(t.db, engines, { untilIdle: true, pollIntervalMs: 100, signal: new AbortController().signal, log })
    } finally {
      await Promise.all([enx.close(), lookup.close(), services.verification.close(), services.lookup.close(), client.close()])
    }
    expect(captured).toContain('"outcome":"ingested"')
    expect(captured).toContain('"msg":"link batch"')
    expect(captured).toContain('"msg":"case sync attempt failed"')
    expect(sandbox.stats.submissions).toBeGreaterThan(0)
    expect(captured).toContain('"msg":"case sync round"')
    expect(captured).toContain('"msg":"pulled changes from CommCare"')
    expect(enx.stats.itemErrors.sms_failure).toBeGreaterThan(0)
    expect(enx.ledger.length).toBeGreaterThan(0)
    expect(captured).toContain('"msg":"exposure codes issued"')
    const phones = enx.ledger.map((e) => e.phone)
    for (const pii of [...phones, ...phones.map((p) => p.slice(2)), 'SMITH', 'AGENT', 'GOODE', 'JOHNNY', 'LASTNAME', 'FIRSTNAME', '5551234567', '123-4567', '456 OTHER', '01MAR1947', '15200000000001']) {
      expect(captured, pii).not.toContain(pii)
    }
  })
})
