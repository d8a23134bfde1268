/** The hand-over queues: created notifications of one type, handed to that type's providers. */
import type { QueueSpec } from '../../engine/queue.ts'

/**
 * Texts (engine `send`) and emails (engine `email`, src/messaging/email/) share the notifications
 * table; each engine claims its own type and fails only its own rows.
 */
export function handOverQueue(engine: string, type: 'sms' | 'email'): QueueSpec {
  return {
    engine,
    table: 'notifications',
    key: 'id',
    keyType: 'uuid',
    ready: `status = 'created' AND notification_type = '${type}'`,
    failedScope: `notification_type = '${type}'`,
    order: 'created_at',
    since: 'created_at',
    // Texts are claimed a chunk at a time and offered to a provider only while their lease is live (send/engine.ts); emails renew theirs by heartbeats.
    leaseSeconds: 120,
    // Only failures where the provider surely took nothing (no connection, 429 or throttling, 5xx, an SMTP 4xx) are retried.
    retry: { maxAttempts: 10, baseSeconds: 15, factor: 2, capSeconds: 3600, jitter: 0.1 },
    onFailed: { status: `'technical-failure'`, completed_at: 'now()', updated_at: 'now()' },
    onRetry: { status: `'created'`, completed_at: 'NULL', updated_at: 'now()' },
  }
}

export const sendQueue = handOverQueue('send', 'sms')
