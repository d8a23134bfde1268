/** The receipts engine's queue: delivery receipts as they came, until applied. */
import type { QueueSpec } from '../../engine/queue.ts'

export const receiptsQueue: QueueSpec = {
  engine: 'receipts',
  table: 'sms_receipts',
  key: 'id',
  keyType: 'bigint',
  ready: 'true',
  order: 'id',
  since: 'received_at',
  leaseSeconds: 60,
  // A receipt may outrun the recording of its send: its notification is looked for again a few times.
  retry: { maxAttempts: 5, baseSeconds: 5, factor: 2, capSeconds: 300, jitter: 0.1 },
}
