/**
 * Ingest's queue: objects found in the inbox, taken one at a time in the order they were found
 * (inbox.ts claims only the head of the line, under an advisory lock). State 'claimed' is only on
 * rows claimed before migration 009: an in-flight file is one under a live lease.
 */
import type { QueueSpec } from '../engine/queue.ts'

export const inboxQueue: QueueSpec = {
  engine: 'ingest',
  table: 'inbox_files',
  key: 'id',
  keyType: 'bigint',
  ready: `state IN ('pending', 'claimed')`,
  order: 'id',
  since: 'found_at',
  leaseSeconds: 300, // the claim uses HERALD_CLAIM_LEASE_SECONDS (default 300), renewed by every batch
  // As before the primitive: 10, 20, 40, 80 s between the five attempts (now ±10%), then failed.
  retry: { maxAttempts: 5, baseSeconds: 10, factor: 2, capSeconds: 3600, jitter: 0.1 },
  onFailed: { state: `'failed'` },
  onRetry: { state: `'pending'` },
}
