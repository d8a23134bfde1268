/** The email engine's queue: created emails, handed to the email provider (texts have the send engine's). */
import type { QueueSpec } from '../../engine/queue.ts'

export const emailQueue: QueueSpec = {
  engine: 'email',
  table: 'notifications',
  key: 'id',
  keyType: 'uuid',
  ready: `status = 'created' AND notification_type = 'email'`,
  failedScope: `notification_type = 'email'`,
  order: 'created_at',
  since: 'created_at',
  // Renewed by heartbeats while a round runs.
  leaseSeconds: 120,
  // Only failures where the provider surely took nothing (no connection, 4xx SMTP, SES throttling or 5xx) are retried.
  retry: { maxAttempts: 10, baseSeconds: 15, factor: 2, capSeconds: 3600, jitter: 0.1 },
  onFailed: { status: `'technical-failure'`, completed_at: 'now()', updated_at: 'now()' },
  onRetry: { status: `'created'`, completed_at: 'NULL', updated_at: 'now()' },
}
