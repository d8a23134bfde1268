/** The send engine's queue: created notifications, handed to the SMS providers. */
import type { QueueSpec } from '../../engine/queue.ts'

export const sendQueue: QueueSpec = {
  engine: 'send',
  table: 'notifications',
  key: 'id',
  keyType: 'uuid',
  // Texts only: emails share the table and have their own queue (src/messaging/email/queue.ts).
  ready: `status = 'created' AND notification_type = 'sms'`,
  failedScope: `notification_type = 'sms'`,
  order: 'created_at',
  since: 'created_at',
  // Renewed by heartbeats while a round runs: a round of 4 × concurrency texts, each up to two provider calls.
  leaseSeconds: 120,
  // Only failures where every provider surely sent nothing (no connection, 429, 5xx) are retried.
  retry: { maxAttempts: 10, baseSeconds: 15, factor: 2, capSeconds: 3600, jitter: 0.1 },
  onFailed: { status: `'technical-failure'`, completed_at: 'now()', updated_at: 'now()' },
  onRetry: { status: `'created'`, completed_at: 'NULL', updated_at: 'now()' },
}
