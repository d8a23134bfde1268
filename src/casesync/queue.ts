/** Case sync's queues: outbound jobs (one per case) and inbound polls (one cursor per domain, a schedule). */
import type { QueueSpec } from '../engine/queue.ts'

export const outboundQueue: QueueSpec = {
  engine: 'casesync-out',
  table: 'case_sync_queue',
  key: 'index_case_id',
  keyType: 'bigint',
  ready: 'true',
  order: 'requested_at',
  since: 'requested_at',
  // Longer than a job's requests (a chain to resolve, then the form, each up to the client's timeout).
  leaseSeconds: 300,
  // 30 s doubling to 7 h, ±10%: twenty attempts span 30·(2¹⁰−1) + 9·25,200 s ≈ 3 days, CommCare's outages included.
  // A refusal (400, 404, 422) or a transfer/duplicate cycle fails at once (outbound.ts).
  retry: { maxAttempts: 20, baseSeconds: 30, factor: 2, capSeconds: 7 * 3600, jitter: 0.1 },
  events: { table: 'case_sync_events', key: 'index_case_id' },
}

/**
 * A domain's cursor is due when retry_at (the next poll, pollSeconds after the last complete one)
 * has passed. A failed poll backs off 60 s doubling to an hour and never fails for good: CommCare
 * coming back is all it needs. Only participating counties' domains are work.
 */
export const inboundQueue: QueueSpec = {
  engine: 'casesync-in',
  table: 'commcare_cursors',
  key: 'domain',
  keyType: 'text',
  ready: 'domain IN (SELECT c.domain FROM counties c WHERE c.participating)',
  order: 'retry_at NULLS FIRST, domain',
  since: 'retry_at',
  leaseSeconds: 600,
  retry: { maxAttempts: 1000000, baseSeconds: 60, factor: 2, capSeconds: 3600, jitter: 0.1 },
}
