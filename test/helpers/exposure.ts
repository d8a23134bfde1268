/** Exposure in tests: the verification and lookup sandboxes, the three engines pointed at them, run until nothing is due. */
import { afterEach } from 'vitest'
import { loadConfig } from '../../src/config.ts'
import type { Db } from '../../src/db/types.ts'
import { LookupClient, VerificationClient } from '../../src/exposure/clients.ts'
import { exposureEngines } from '../../src/exposure/index.ts'
import { createLogger } from '../../src/log.ts'
import { startLookupSandbox, type LookupSandboxOptions } from '../../src/sandbox/lookup/server.ts'
import { startVerificationSandbox, type VerificationSandboxOptions } from '../../src/sandbox/verification/server.ts'

const open: { close(): Promise<void> }[] = []
afterEach(async () => {
  await Promise.all(open.splice(0).map((s) => s.close()))
})

export const SECRET = 'test-secret-key-test-secret-key-0123456789'

export async function exposureWorld(opts: {
  enx?: Partial<VerificationSandboxOptions>; lookup?: Partial<LookupSandboxOptions>; env?: Record<string, string>
} = {}) {
  const enx = await startVerificationSandbox({ apiKey: 'enx-key', seed: 1, ...opts.enx })
  const lookup = await startLookupSandbox({ accountSid: 'ACtest', authToken: 'token', ...opts.lookup })
  open.push(enx, lookup)
  /** The configuration of one worker (HERALD_WORKER_ID). */
  const configOf = (worker: string) => loadConfig({
    HERALD_ENX_URL: enx.url, HERALD_ENX_API_KEY: 'enx-key', HERALD_LOOKUP_URL: lookup.url, HERALD_TWILIO_ACCOUNT_SID: 'ACtest',
    HERALD_TWILIO_AUTH_TOKEN: 'token', HERALD_SECRET_KEY: SECRET, HERALD_TIMEZONE: 'America/New_York', HERALD_WORKER_ID: worker, ...opts.env,
  })
  const config = configOf('A')
  const services = {
    verification: new VerificationClient({ url: enx.url, apiKey: 'enx-key', timeoutMs: 2000 }),
    lookup: new LookupClient({ url: lookup.url, accountSid: 'ACtest', authToken: 'token', timeoutMs: 2000 }),
  }
  /** The three engines of a worker, by name. */
  const worker = (id: string) => {
    const [intake, check, issue] = exposureEngines(configOf(id), createLogger('silent'), services)
    return { intake, check, issue }
  }
  const engines = exposureEngines(config, createLogger('silent'), services)
  /** Every engine, round after round, until none has anything due; returns the outcome counts. */
  const run = async (db: Db) => {
    const total: Record<string, number> = {}
    for (let busy = true; busy;) {
      busy = false
      for (const e of engines) {
        for (const [k, n] of Object.entries(await e.step(db, new AbortController().signal))) {
          total[k] = (total[k] ?? 0) + n
          busy = true
        }
      }
    }
    return total
  }
  return { enx, lookup, config, services, worker, run }
}

/** Retries waiting in the future are due now (tests do not wait out backoffs). */
/** A phone in the lookup sandbox's ranges by i: mostly mobile, some landline, invalid, a 429 once, a 500 once (src/sandbox/lookup/README.md). */
export const lookupPhone = (i: number) => `555${String(i).padStart(3, '0')}${[0, 1, 2, 3, 4, 0, 1, 5, 80, 85, 90][i % 11]}`.padEnd(10, '1')

export const dueNow = (db: Db) => db.query('UPDATE exposure_notices SET retry_at = now() WHERE retry_at IS NOT NULL')

export const states = async (db: Db) =>
  Object.fromEntries((await db.query(`SELECT coalesce(state || ':' || coalesce(reason, last_error), state) AS s, count(*)::int AS n FROM exposure_notices
    WHERE state IN ('issued', 'not_sent') OR retry_at IS NOT NULL GROUP BY 1`)).map((r) => [r.s, r.n]))
