/** The jobs engine's queue: bulk jobs due (scheduled ones from their time, in retry_at). */
import type { QueueSpec } from '../../engine/queue.ts'

export const jobsQueue: QueueSpec = {
  engine: 'jobs',
  table: 'jobs',
  key: 'id',
  keyType: 'uuid',
  ready: `status IN ('scheduled', 'pending', 'in progress')`,
  order: 'coalesce(scheduled_for, created_at)',
  since: 'coalesce(scheduled_for, created_at)',
  leaseSeconds: 300,
  retry: { maxAttempts: 5, baseSeconds: 30, factor: 4, capSeconds: 3600, jitter: 0.1 },
  onFailed: { status: `'error'`, error: 'f.error', finished_at: 'now()' },
  onRetry: { status: `'pending'`, error: 'NULL', finished_at: 'NULL' },
}
