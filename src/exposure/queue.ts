/**
 * Exposure's three queues: link's marks, notices to check, notices to issue. Check and issue share
 * exposure_notices (their `ready` is the notice's state) and its event table.
 */
import type { QueueSpec } from '../engine/queue.ts'

const events = { table: 'exposure_events', key: 'notice_id' }

/** Claimed with claimInTx inside intake's transaction (the lease is the transaction); a mark that fails backs off. */
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

const notices = (engine: string, state: string, failedScope: string): QueueSpec => ({
  engine,
  // Both steps fail notices to not_sent: a notice failed at check has no checked phone.
  failedScope,
  table: 'exposure_notices',
  key: 'id',
  keyType: 'bigint',
  ready: `state = '${state}'`,
  order: 'id',
  since: 'updated_at',
  // Longer than a lookup or a batch-issue request can take (their timeout): issue's effect gate renews
  // it before each request; check starts a lookup only while the lease, as it sees it, outlasts the
  // lookup's timeout (check.ts). Either way a request never outlives its lease.
  leaseSeconds: 300,
  // 30 s doubling, at most an hour; twelve attempts ≈ 5.5 hours of an outage before "not sent".
  // Each step has its own twelve: finish() resets attempts when a notice moves on (notices.ts).
  retry: { maxAttempts: 12, baseSeconds: 30, factor: 2, capSeconds: 3600, jitter: 0.1 },
  // Not sent, with the reason: a refusal (a permanent failure) names it in its detail (lookup_refused,
  // refused); otherwise the notice ran out of attempts (`f` is fail()'s failure row).
  onFailed: { state: `'not_sent'`, reason: `coalesce(f.detail->>'reason', 'out_of_attempts')` },
  // Back to the step that failed: issue, if the phone was checked and the refusal was not the lookup's.
  // A notice sent back to check loses its checked number, so its failures there count as check's (failedScope).
  onRetry: { state: `CASE WHEN t.phone_e164 IS NULL OR t.reason = 'lookup_refused' THEN 'pending' ELSE 'phone_checked' END`,
    phone_e164: `CASE WHEN t.reason = 'lookup_refused' THEN NULL ELSE t.phone_e164 END`, reason: 'NULL', updated_at: 'now()' },
  events,
})

export const checkQueue = notices('exposure-check', 'pending', 'phone_e164 IS NULL')
export const issueQueue = notices('exposure-issue', 'phone_checked', 'phone_e164 IS NOT NULL')
