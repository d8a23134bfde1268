/** The nightly run's queue: one row in schedules, due (retry_at) at the next night's HERALD_NIGHTLY_AT. */
import type { QueueSpec } from '../../engine/queue.ts'

export const nightlyQueue: QueueSpec = {
  engine: 'nightly',
  table: 'schedules',
  key: 'name',
  keyType: 'text',
  ready: `name = 'nightly'`,
  order: 'name',
  since: 'retry_at',
  leaseSeconds: 600,
  // Never fails for good: retention is a promise to the people whose numbers expire, so a failing run is
  // tried again (10 min doubling, then hourly) until it passes, its error in `herald queue` meanwhile.
  retry: { maxAttempts: 1_000_000, baseSeconds: 600, factor: 2, capSeconds: 3600, jitter: 0.1 },
}
