/**
 * Exposure notification: every newly positive resident gets one verification code, never two.
 * Three engines, each claiming its own work, so the steps run side by side:
 *   exposure-intake  link's marks → notices, one per person per episode (intake.ts)
 *   exposure-check   pending → phone_checked, or not sent with the reason (check.ts)
 *   exposure-issue   phone_checked → issued, 10 to a request, paced to the server's quota (issue.ts, pacer.ts)
 */
import type { Config } from '../config.ts'
import type { BatchEngine } from '../engine/engine.ts'
import type { Logger } from '../log.ts'
import { secretKey } from '../privacy/keys.ts'
import { checkPhones } from './check.ts'
import type { LookupClient, VerificationClient } from './clients.ts'
import { intake } from './intake.ts'
import { BATCH, issueBatch } from './issue.ts'
import { claimNotices, record, type Change } from './notices.ts'

const tally = (changes: Change[]) => {
  const counts: Record<string, number> = {}
  for (const c of changes) {
    const k = c.state === 'not_sent' ? `not_sent:${c.reason}` : c.retryIn !== undefined ? 'retrying' : c.state
    counts[k] = (counts[k] ?? 0) + 1
  }
  return counts
}

export function exposureEngines(config: Config, log: Logger, services: { lookup?: LookupClient; verification: VerificationClient }): BatchEngine[] {
  const cfg = config.exposure
  const key = secretKey(config)
  const intakeEngine: BatchEngine = {
    name: 'exposure-intake',
    batchSize: 1000,
    step: (db) => intake(db, cfg, 1000),
  }
  const checkEngine: BatchEngine = {
    name: 'exposure-check',
    batchSize: cfg.lookupConcurrency * 4,
    async step(db) {
      const notices = await claimNotices(db, 'pending', cfg.lookupConcurrency * 4)
      if (notices.length === 0) return {}
      const changes = await checkPhones(db, notices, cfg, key, services.lookup)
      await record(db, changes)
      return tally(changes)
    },
  }
  const issueEngine: BatchEngine = {
    name: 'exposure-issue',
    batchSize: cfg.issueConcurrency * BATCH * 2,
    async step(db) {
      const notices = await claimNotices(db, 'phone_checked', cfg.issueConcurrency * BATCH * 2)
      if (notices.length === 0) return {}
      const batches: typeof notices[] = []
      for (let i = 0; i < notices.length; i += BATCH) batches.push(notices.slice(i, i + BATCH))
      const counts: Record<string, number> = {}
      let next = 0
      await Promise.all(Array.from({ length: Math.min(cfg.issueConcurrency, batches.length) }, async () => {
        while (next < batches.length) {
          const changes = await issueBatch(db, batches[next++], cfg, services.verification)
          await record(db, changes)
          for (const [k, n] of Object.entries(tally(changes))) counts[k] = (counts[k] ?? 0) + n
        }
      }))
      if (counts.issued) log.info(counts, 'exposure codes issued')
      return counts
    },
  }
  return [intakeEngine, checkEngine, issueEngine]
}
