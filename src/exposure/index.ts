/**
 * Exposure notification: every newly positive resident gets one verification code, never two.
 * Three engines, each claiming its own work through the work queue (queue.ts), so the steps run side by side:
 *   exposure-intake  link's marks → notices, one per person per episode (intake.ts)
 *   exposure-check   pending → phone_checked, or not sent with the reason (check.ts)
 *   exposure-issue   phone_checked → issued, 10 to a request, paced to the server's quota (issue.ts, pacer.ts)
 * Told to stop, check and issue start no more lookups or batches and release the notices not started.
 */
import type { Config } from '../config.ts'
import type { Engine } from '../engine/engine.ts'
import { leaseEnd } from '../engine/queue.ts'
import type { Logger } from '../log.ts'
import { secretKey } from '../privacy/keys.ts'
import { checkPhones } from './check.ts'
import type { LookupClient, VerificationClient } from './clients.ts'
import { intake } from './intake.ts'
import { ExposureKeys } from './keys.ts'
import { BATCH, issueBatch } from './issue.ts'
import { addCounts, claimNotices, record, releaseNotices, type Notice } from './notices.ts'
import { checkQueue, issueQueue } from './queue.ts'

export function exposureEngines(config: Config, log: Logger, services: { lookup?: LookupClient; verification: VerificationClient }): Engine[] {
  const cfg = config.exposure
  const key = new ExposureKeys(secretKey(config))
  const worker = config.workerId
  const intakeEngine: Engine = {
    name: 'exposure-intake',
    batchSize: 1000,
    step: (db) => intake(db, cfg, 1000),
  }
  const checkEngine: Engine = {
    name: 'exposure-check',
    batchSize: cfg.lookupConcurrency * 4,
    async step(db, signal) {
      // The last moment a lookup may start: its lease's end less the lookup's timeout (run.ts gives the
      // lookup client HERALD_COMMCARE_TIMEOUT_MS, as every outside client), read before the claim.
      const until = leaseEnd(checkQueue) - config.commcare.timeoutMs
      const notices = await claimNotices(db, checkQueue, worker, cfg.lookupConcurrency * 4)
      if (notices.length === 0) return {}
      const { changes, unstarted } = await checkPhones(db, notices, cfg, key, services.lookup, until, signal)
      const counts = await record(db, checkQueue, worker, changes)
      if (unstarted.length > 0) counts.released = await releaseNotices(db, checkQueue, worker, unstarted)
      return counts
    },
  }
  const issueEngine: Engine = {
    name: 'exposure-issue',
    batchSize: cfg.issueConcurrency * BATCH * 2,
    async step(db, signal) {
      const notices = await claimNotices(db, issueQueue, worker, cfg.issueConcurrency * BATCH * 2)
      if (notices.length === 0) return {}
      const batches: Notice[][] = []
      for (let i = 0; i < notices.length; i += BATCH) batches.push(notices.slice(i, i + BATCH))
      const counts: Record<string, number> = {}
      let next = 0
      await Promise.all(Array.from({ length: Math.min(cfg.issueConcurrency, batches.length) }, async () => {
        // A batch begun is finished and recorded; told to stop, no other begins.
        while (next < batches.length && !signal.aborted) {
          const changes = await issueBatch(db, batches[next++], cfg, services.verification, worker, key)
          addCounts(counts, await record(db, issueQueue, worker, changes))
        }
      }))
      const unstarted = batches.slice(next).flat()
      if (unstarted.length > 0) counts.released = await releaseNotices(db, issueQueue, worker, unstarted)
      if (counts.issued) log.info(counts, 'exposure codes issued')
      return counts
    },
  }
  return [intakeEngine, checkEngine, issueEngine]
}
