/** From files dropped in the inbox to people, cases and lab results in the CommCare sandbox, and back: the engines as `herald start` runs them. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { casesyncInEngine, casesyncOutEngine, commcareClient } from '../src/casesync/index.ts'
import { loadConfig } from '../src/config.ts'
import { Counters } from '../src/engine/engine.ts'
import { runEngines } from '../src/engine/runner.ts'
import { ingestEngine } from '../src/ingest/index.ts'
import { linkEngine } from '../src/link/index.ts'
import { createLogger } from '../src/log.ts'
import { createTestDb, TEST_SECRET_KEY, type TestDb } from './helpers/db.ts'
import { copyFixture, tempDir } from './helpers/files.ts'
import { labResults, patients, startSandbox } from './helpers/casesync.ts'
import { loadCounties } from './helpers/link.ts'

let t: TestDb
const tmp = tempDir()
beforeAll(async () => {
  t = await createTestDb()
})
afterAll(async () => {
  await t.drop()
  tmp.cleanup()
})

describe('ingest, link and case sync together', () => {
  it('turn the fixture exports dropped in the inbox into cases in CommCare, and bring an investigator\'s change back', async () => {
    await loadCounties(t.db)
    for (const f of ['new_records.txt', 'v2_new_records_added_info.txt', 'v3_new_records_added_info.txt']) copyFixture(f, tmp.dir)
    await new Promise((r) => setTimeout(r, 2100)) // files younger than 2 s are still being written, for the inbox
    const sandbox = await startSandbox()
    const config = loadConfig({ DATABASE_URL: t.url, HERALD_SECRET_KEY: TEST_SECRET_KEY, HERALD_INBOX: tmp.dir, HERALD_POLL_INTERVAL_MS: '100', HERALD_COMMCARE_URL: sandbox.url,
      HERALD_COMMCARE_USER: 'herald', HERALD_COMMCARE_API_KEY: 'sandbox', HERALD_COMMCARE_ROOT_DOMAIN: 'ny-covid' })
    const log = createLogger('silent')
    const counters = new Counters()
    const client = commcareClient(config, sandbox.url)
    const engines = [ingestEngine(config, log), linkEngine(config, log), casesyncOutEngine(config, log, client), casesyncInEngine(config, log, client)]
    const run = () => runEngines(t.db, engines, { untilIdle: true, pollIntervalMs: 100, signal: new AbortController().signal, counters, log })
    await run()
    expect(counters.get('ingest', 'ingested')).toBe(3)
    const people = await t.db.query(`SELECT p.last_name, array_agg(DISTINCT c.county_fips) AS counties, count(r.id)::int AS results,
        bool_and(r.data ? 'employer_name' OR p.last_name = 'GOODE') AS employer, bool_or(r.data ? 'first_test') AS v3
      FROM people p JOIN index_cases c ON c.person_id = p.id JOIN lab_results r ON r.index_case_id = c.id
      GROUP BY p.id ORDER BY 1`)
    expect(people).toEqual([
      { last_name: 'GOODE', counties: [900], results: 1, employer: true, v3: true },
      { last_name: 'LASTNAME', counties: [900], results: 1, employer: true, v3: true },
      { last_name: 'SMITH', counties: [900], results: 1, employer: true, v3: false },
    ])
    expect(await t.db.query('SELECT count(*)::int AS n FROM link_queue')).toEqual([{ n: 0 }])

    // In CommCare: the state domain holds the three patients, each with its lab result.
    const inCommCare = patients(sandbox, 'ny-statewide-cdcms')
    expect(inCommCare.map((p) => p.properties.last_name).sort()).toEqual(['GOODE', 'LASTNAME', 'SMITH'])
    expect(labResults(sandbox, 'ny-statewide-cdcms').map((r) => inCommCare.some((p) => p.case_id === r.indices.parent.case_id))).toEqual([true, true, true])
    expect(await t.db.query('SELECT count(*)::int AS n FROM case_sync_queue')).toEqual([{ n: 0 }])

    // An investigator's change flows back at the next poll.
    const smith = inCommCare.find((p) => p.properties.last_name === 'SMITH')!
    sandbox.edit('ny-statewide-cdcms', smith.case_id, { case_notes: 'isolating at home' })
    await t.db.query('UPDATE commcare_cursors SET retry_at = NULL')
    await run()
    expect(await t.db.query('SELECT data->>\'case_notes\' AS notes FROM index_cases WHERE case_id = $1', [smith.case_id])).toEqual([{ notes: 'isolating at home' }])
    expect(patients(sandbox)).toHaveLength(3)
  })
})
