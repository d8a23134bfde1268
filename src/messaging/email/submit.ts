/**
 * One email asked for (POST /v2/notifications/email): checked as GOV.UK Notify checks it (the
 * limits first, then the template, the reply-to, the personalisation and the address, with Notify's
 * messages), then admitted through the one admission path (api/admit.ts) as notification_type
 * 'email': the address sealed and keyed-hashed (lower case) as a phone number is.
 */
import type { Db } from '../../db/types.ts'
import type { Sealer } from '../../privacy/seal.ts'
import { type Admitter, limitError, notificationId } from '../api/admit.ts'
import type { Directory } from '../api/directory.ts'
import { ApiError, badRequest, validation } from '../api/errors.ts'
import { TEAM_ONLY, TRIAL } from '../prepare.ts'
import type { Template } from '../services.ts'
import type { Sender } from '../api/submit.ts'
import { checkEmail } from './address.ts'
import { renderEmail, type RenderedEmail } from './format.ts'
import { replyToFor } from './replyto.ts'

export interface EmailRequest {
  email_address: string
  template_id: string
  personalisation?: Record<string, unknown>
  reference?: string
  email_reply_to_id?: string
  one_click_unsubscribe_url?: string
}

export interface SubmittedEmail { id: string; template: Template; email: RenderedEmail }

/** Notify's limit on an email body (2 MB of its HTML-free content). */
const MAX_BODY = 2_000_000

export async function submitEmail(deps: { db: Db; dir: Directory; sealer: Sealer }, admitter: Admitter, by: Sender, b: EmailRequest,
  scheduledFor: Date | null = null): Promise<SubmittedEmail> {
  const { service, keyType } = by
  const ready = await readyEmail(deps, by, b)
  const id = notificationId()
  const admitted = await admitter.admit({
    service, keyType, request: by.request, texts: 1,
    row: ready instanceof ApiError ? undefined : {
      id, service, templateId: ready.template.id, templateVersion: ready.template.version, apiKeyId: by.apiKeyId, keyType,
      reference: b.reference ?? null, recipientHash: ready.hash, recipientCt: deps.sealer.seal(ready.address),
      personalisationCt: b.personalisation && Object.keys(b.personalisation).length ? deps.sealer.seal(JSON.stringify(b.personalisation)) : null,
      international: false, scheduledFor,
      email: { replyTo: ready.replyTo, unsubscribeCt: b.one_click_unsubscribe_url ? deps.sealer.seal(b.one_click_unsubscribe_url) : null },
    },
  })
  if (!admitted.ok) throw limitError(service, keyType, admitted.limit)
  if (ready instanceof ApiError) throw ready
  return { id, template: ready.template, email: ready.email }
}

async function readyEmail(deps: { db: Db; dir: Directory; sealer: Sealer }, by: Sender, b: EmailRequest) {
  const { service, keyType } = by
  const template = await deps.dir.template(service.id, b.template_id.toLowerCase())
  if (!template) return badRequest('Template not found')
  if (template.archived) return badRequest('Template has been deleted')
  if (template.type !== 'email') return badRequest(`${template.type} template is not suitable for email notification`)
  const replyTo = await replyToFor(deps.db, service.id, b.email_reply_to_id?.toLowerCase())
  if (replyTo === undefined) return badRequest(`email_reply_to_id ${b.email_reply_to_id} does not exist in database for service id ${service.id}`)
  const email = renderEmail(template.subject ?? '', template.body, b.personalisation)
  if (email.missing.length) return badRequest(`Missing personalisation: ${email.missing.join(', ')}`)
  if (email.body.length === 0) return badRequest('Your message is empty.')
  if (Buffer.byteLength(email.body) > MAX_BODY) return badRequest(`Your message is too long. Emails cannot be longer than ${MAX_BODY} bytes.`)
  const address = checkEmail(b.email_address)
  if (!address.ok) return validation(`email_address ${address.message}`)
  const hash = deps.sealer.hash(address.normal)
  if (keyType === 'team' && !(await deps.dir.isRecipient(service.id, hash))) return badRequest(TEAM_ONLY)
  if (keyType === 'normal' && service.restricted && !(await deps.dir.isRecipient(service.id, hash))) return badRequest(TRIAL)
  return { template, email, hash, address: address.address, replyTo }
}
