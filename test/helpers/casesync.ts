/** Case sync in tests: a CommCare sandbox per test, the engines pointed at it, and the pipeline up to case_sync_queue. */
import { afterEach, expect } from 'vitest'
import { casesyncInEngine, casesyncOutEngine, commcareClient } from '../../src/casesync/index.ts'
import { loadConfig } from '../../src/config.ts'
import type { Db } from '../../src/db/types.ts'
import { readCounties } from '../../src/link/counties.ts'
import { createLogger } from '../../src/log.ts'
import { startCommCareSandbox, type CommCareSandbox, type CommCareSandboxOptions } from '../../src/sandbox/commcare/server.ts'
import { exportText, row, writeExport } from './files.ts'
import { ingestPath } from './ingest.ts'
import { linkAll } from './link.ts'

const open: CommCareSandbox[] = []
afterEach(async () => {
  await Promise.all(open.splice(0).map((s) => s.close()))
})

export async function startSandbox(opts: Partial<CommCareSandboxOptions> = {}): Promise<CommCareSandbox> {
  const s = await startCommCareSandbox({ user: 'herald', apiKey: 'sandbox', rootDomain: 'ny-covid', seed: 1, ...opts })
  open.push(s)
  return s
}

export function casesync(sandbox: CommCareSandbox, env: Record<string, string> = {}) {
  const config = loadConfig({ HERALD_COMMCARE_URL: sandbox.url, HERALD_COMMCARE_USER: 'herald', HERALD_COMMCARE_API_KEY: 'sandbox',
    HERALD_COMMCARE_ROOT_DOMAIN: 'ny-covid', HERALD_COMMCARE_TIMEOUT_MS: '2000', HERALD_WORKER_ID: 'test', ...env })
  const log = createLogger('silent')
  const client = commcareClient(config, sandbox.url)
  return { config, log, client, out: casesyncOutEngine(config, log, client), in: casesyncInEngine(config, log, client) }
}

/** Runs outbound rounds until no job is due; returns the outcome counts. */
export async function syncAll(db: Db, engine: ReturnType<typeof casesync>['out']): Promise<Record<string, number>> {
  const total: Record<string, number> = {}
  for (;;) {
    const counts = await engine.step(db, new AbortController().signal)
    if (Object.keys(counts).length === 0) return total
    for (const [k, n] of Object.entries(counts)) total[k] = (total[k] ?? 0) + n
  }
}

let fileNo = 0
/** Ingests rows as one export file and links them: their cases wait in case_sync_queue. */
export async function linkRows(db: Db, dir: string, rows: string[][]) {
  await ingestPath(db, writeExport(dir, `casesync-${process.pid}-${++fileNo}.txt`, exportText(3, rows)))
  return linkAll(db)
}

/** Jobs waiting for a retry are due now (tests do not wait out the backoff). */
export const dueNow = (db: Db) => db.query('UPDATE case_sync_queue SET retry_at = now() WHERE retry_at IS NOT NULL')

/** Makes these jobs' leases run out now, as if their worker had stopped renewing them. */
export const expireLeases = (db: Db, where = 'true') =>
  db.query(`UPDATE case_sync_queue SET claimed_until = now() - interval '1 second' WHERE claimed_until IS NOT NULL AND (${where})`)

export const counties = readCounties

export async function caseOf(db: Db, where = 'true') {
  const [c] = await db.query(`SELECT id::text, case_id, county_fips, synced_at, data FROM index_cases WHERE ${where} ORDER BY id LIMIT 1`)
  return c
}

export const events = (db: Db, indexCaseId: string) =>
  db.query('SELECT kind, detail FROM case_sync_events WHERE index_case_id = $1 ORDER BY id', [indexCaseId])

export const patients = (s: CommCareSandbox, domain?: string) => s.cases(domain).filter((c) => c.case_type === 'patient')
export const labResults = (s: CommCareSandbox, domain?: string) => s.cases(domain).filter((c) => c.case_type === 'lab_result')

/** One person in Albany (FIPS 1) with one positive result `${key}-A1`, synced once, against a new sandbox. */
export async function syncedPerson(db: Db, dir: string, key: string) {
  const s = await startSandbox()
  const cs = casesync(s)
  await linkRows(db, dir, [row(3, { PIDPATIENTKEY: key, PIDCOUNTYCODE: '1', OBRACCESSIONNUM: `${key}-A1` })])
  expect(await syncAll(db, cs.out)).toEqual({ posted: 1 })
  const c = await caseOf(db)
  return { s, cs, c }
}
