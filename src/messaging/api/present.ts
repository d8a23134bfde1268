/** Notifications and templates as GOV.UK Notify's v2 API shows them (docs/notify-api-reference.md §4). */
import type { Sealer } from '../../privacy/seal.ts'
import type { Template } from '../services.ts'
import { placeholders, render } from '../templates.ts'
import { emailPlaceholders } from '../email/format.ts'

/** Notify's time format: ISO 8601 in UTC with microseconds. */
export const notifyTime = (t: Date | string | null | undefined) => (t ? new Date(t).toISOString().replace('Z', '000Z') : null)

const COMPLETED = new Set(['sent', 'delivered', 'technical-failure', 'temporary-failure', 'permanent-failure', 'cancelled', 'validation-failed'])

/** A notifications row (with its template version's body) as GET /v2/notifications shows it. */
export function presentNotification(r: Record<string, any>, sealer: Sealer, base: string) {
  const personalisation = r.personalisation_ct ? JSON.parse(sealer.open(Buffer.from(r.personalisation_ct))) : {}
  const units = r.billable_units as number | null
  const email = r.notification_type === 'email'
  const to = r.recipient_ct ? sealer.open(Buffer.from(r.recipient_ct)) : null
  return {
    id: r.id, reference: r.reference, email_address: email ? to : null,
    phone_number: email ? null : to,
    line_1: null, line_2: null, line_3: null, line_4: null, line_5: null, line_6: null, postcode: null,
    type: r.notification_type, status: r.status,
    template: { id: r.template_id, version: r.template_version, uri: `${base}/v2/template/${r.template_id}/version/${r.template_version}` },
    created_at: notifyTime(r.created_at), created_by_name: null,
    body: r.template_body === null ? null : render(r.template_body, personalisation).text,
    subject: email && r.template_subject ? render(r.template_subject, personalisation).text.replace(/\s+/g, ' ').trim() : null,
    sent_at: notifyTime(r.sent_at), completed_at: COMPLETED.has(r.status) ? notifyTime(r.completed_at ?? r.updated_at) : null,
    scheduled_for: notifyTime(r.scheduled_for), postage: null,
    one_click_unsubscribe_url: r.unsubscribe_ct ? sealer.open(Buffer.from(r.unsubscribe_ct)) : null,
    // Prices come with billing; the fragments are known once the text was handed to a provider.
    is_cost_data_ready: false, cost_in_pounds: null,
    cost_details: units === null || email ? {} : { billable_sms_fragments: units, international_rate_multiplier: Number(r.rate_multiplier ?? 1) },
    // Herald's, beside Notify's: why it failed, in words a person can act on (send/failure-reasons.ts); null when it has not.
    failure_reason: r.failure_reason ?? null,
  }
}

export function presentTemplate(t: Template) {
  return {
    id: t.id, type: t.type, created_at: notifyTime(t.createdAt), updated_at: notifyTime(t.updatedAt), created_by: t.createdBy,
    version: t.version, body: t.body, subject: t.type === 'email' ? t.subject : null, name: t.name,
    personalisation: Object.fromEntries((t.type === 'email' ? emailPlaceholders(t.subject ?? '', t.body) : placeholders(t.body)).map((p) => [p, { required: true }])),
    postage: null, letter_contact_block: null,
  }
}
