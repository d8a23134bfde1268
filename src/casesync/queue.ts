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
  leaseSeconds: 300,
  // 30 s doubling to 7 h, ±10%: twenty attempts span ≈ 3 days, CommCare's outages included.
  retry: { maxAttempts: 20, baseSeconds: 30, factor: 2, capSeconds: 7 * 3600, jitter: 0.1 },
  events: { table: 'case_sync_events', key: 'index_case_id' },
}

export const inboundQueue: QueueSpec = {
  engine: 'casesync-in',
  table: 'commcare_cursors',
  key: 'domain',
  keyType: 'text',
  ready: 'true',
  order: 'domain',
  since: 'retry_at',
  leaseSeconds: 600,
  retry: { maxAttempts: 1000000, baseSeconds: 60, factor: 2, capSeconds: 3600, jitter: 0.1 },
}
