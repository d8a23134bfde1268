/** Ingest's queue: objects found in the inbox, taken one at a time in the order they were found. */
import type { QueueSpec } from '../engine/queue.ts'

export const inboxQueue: QueueSpec = {
  engine: 'ingest',
  table: 'inbox_files',
  key: 'id',
  keyType: 'bigint',
  ready: `state IN ('pending', 'claimed')`,
  order: 'id',
  since: 'found_at',
  leaseSeconds: 300, // HERALD_CLAIM_LEASE_SECONDS, renewed by every batch
  retry: { maxAttempts: 5, baseSeconds: 10, factor: 2, capSeconds: 3600, jitter: 0.1 },
  onFailed: { state: `'failed'` },
  onRetry: { state: `'pending'` },
}
