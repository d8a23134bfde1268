/** Exposure's three queues: link's marks, notices to check, notices to issue. */
import type { QueueSpec } from '../engine/queue.ts'

const events = { table: 'exposure_events', key: 'notice_id' }

export const intakeQueue: QueueSpec = {
  engine: 'exposure-intake',
  table: 'exposure_queue',
  key: 'lab_result_id',
  keyType: 'bigint',
  ready: 'true',
  order: 'lab_result_id',
  since: 'marked_at',
  leaseSeconds: 300,
  retry: { maxAttempts: 5, baseSeconds: 30, factor: 2, capSeconds: 3600, jitter: 0.1 },
}

const notices = (engine: string, state: string): QueueSpec => ({
  engine,
  table: 'exposure_notices',
  key: 'id',
  keyType: 'bigint',
  ready: `state = '${state}'`,
  order: 'id',
  since: 'updated_at',
  leaseSeconds: 300,
  // 30 s doubling, at most an hour; twelve attempts ≈ 5.5 hours of an outage before "not sent".
  retry: { maxAttempts: 12, baseSeconds: 30, factor: 2, capSeconds: 3600, jitter: 0.1 },
  onFailed: { state: `'not_sent'`, reason: `'out_of_attempts'` },
  onRetry: { state: `'pending'`, reason: 'NULL' },
  events,
})

export const checkQueue = notices('exposure-check', 'pending')
export const issueQueue = notices('exposure-issue', 'phone_checked')
