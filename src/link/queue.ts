/** Link's queue: lab rows not yet linked, claimed inside the transaction that links them. */
import type { QueueSpec } from '../engine/queue.ts'

export const linkQueue: QueueSpec = {
  engine: 'link',
  table: 'link_queue',
  key: 'lab_row_id',
  keyType: 'bigint',
  ready: 'true',
  order: 'lab_row_id',
  since: 'queued_at',
  leaseSeconds: 0, // claimInTx: the transaction is the lease
  // 30 s, then ×4: a row that fails alone five times waits for `herald queue retry link`.
  retry: { maxAttempts: 5, baseSeconds: 30, factor: 4, capSeconds: 7680, jitter: 0.1 },
}
