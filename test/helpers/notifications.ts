/** Notifications written straight into the table at chosen times and statuses: retention, facts and reports need a past. */
import { randomUUID } from 'node:crypto'
import type { Db } from '../../src/db/types.ts'
import type { KeyType } from '../../src/messaging/keys.ts'
import { sealer } from './messaging.ts'

export interface Seed {
  at: string | Date
  phone?: string
  keyType?: KeyType
  status?: string
  units?: number
  multiplier?: number
  provider?: string
  international?: boolean
  jobId?: string
  jobRow?: number
  templateId?: string
}

const COLUMNS = ['id', 'service_id', 'template_id', 'template_version', 'key_type', 'job_id', 'job_row', 'reference', 'recipient_hash', 'recipient_ct',
  'personalisation_ct', 'international', 'status', 'billable_units', 'rate_multiplier', 'provider', 'created_at', 'sent_at', 'completed_at']

/** Writes the notifications (defaults: delivered by twilio, 1 fragment, a live key); returns their ids in order. */
export async function seedNotifications(db: Db, service: { id: string }, templateId: string, seeds: Seed[]): Promise<string[]> {
  const ids = seeds.map(() => randomUUID())
  const rows = seeds.map((s, i) => {
    const phone = s.phone ?? `+1212555${String(1000 + (i % 9000)).padStart(4, '0')}`
    const at = new Date(s.at)
    const status = s.status ?? 'delivered'
    const handed = !['created', 'validation-failed', 'cancelled', 'technical-failure'].includes(status)
    return [ids[i], service.id, s.templateId ?? templateId, 1, s.keyType ?? 'normal', s.jobId ?? null, s.jobRow ?? null, `ref-${i}`, sealer.hash(phone),
      sealer.seal(phone), sealer.seal(JSON.stringify({ name: `Person${i}` })), s.international ?? false, status, handed ? s.units ?? 1 : null,
      handed ? s.multiplier ?? 1 : null, handed ? s.provider ?? 'twilio' : null, at, handed ? at : null, handed ? at : null]
  })
  await db.copyInto('notifications', COLUMNS, rows)
  return ids
}

/** What billing and status read, counted through the view in one statement (one snapshot). */
export async function viewCounts(db: Db) {
  const [r] = await db.query(`SELECT count(*)::int AS notifications, coalesce(sum(billable_units), 0)::int AS units,
    count(*) FILTER (WHERE status = 'delivered')::int AS delivered FROM notifications_all_time_view`)
  return r
}
