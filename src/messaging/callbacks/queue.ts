/**
 * The callbacks engine's queue: one row per callback to POST to a service (callback_queue), until its
 * server answers 2xx (sent_at) or it fails for good (failed_at: a 4xx other than 429, or out of retries).
 */
import type { QueueSpec } from '../../engine/queue.ts'

export const callbackQueue: QueueSpec = {
  engine: 'callbacks',
  table: 'callback_queue',
  key: 'id',
  keyType: 'bigint',
  ready: 'sent_at IS NULL',
  order: 'id',
  since: 'created_at',
  // A round is one POST per row, at most 5 s each, all at once; the lease is renewed before each POST.
  leaseSeconds: 60,
  // GOV.UK Notify's send-delivery-status task: max_retries=5, default_retry_delay=300. The first try and
  // five retries, 300 s apart, no growth; only connection errors, timeouts, 5xx and 429 are retried.
  retry: { maxAttempts: 6, baseSeconds: 300, factor: 1, capSeconds: 300, jitter: 0 },
}
