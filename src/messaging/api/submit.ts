/**
 * One text asked for, now or scheduled: the template found, the text checked (prepare.ts) and
 * admitted (admit.ts) with Notify's errors. POST /v2/notifications/sms and the console's "send
 * one-off" both go through `submitSms`, so the limits, the numbers refused and the messages are one.
 */
import type { Sealer } from '../../privacy/seal.ts'
import type { KeyType } from '../keys.ts'
import { prepareText } from '../prepare.ts'
import type { Service, Template } from '../services.ts'
import { type Admitter, limitError, notificationId } from './admit.ts'
import type { Directory } from './directory.ts'
import { ApiError, badRequest } from './errors.ts'

export interface SmsRequest {
  phone_number: string
  template_id: string
  personalisation?: Record<string, unknown>
  reference?: string
  sms_sender_id?: string
}

/** Who asks: an API key (its id and type), or a person in the console (no key: a live text, as Notify's one-off). */
export interface Sender {
  service: Service
  keyType: KeyType
  apiKeyId: string | null
  /** Whether the request takes a rate-limit token (API calls do; Notify's one-off checks the daily limit only). */
  request: boolean
}

export interface Submitted { id: string; template: Template; text: string }

/**
 * Creates the notification (sent at `scheduledFor`, else now) or throws Notify's ApiError (429 over a
 * limit, 400 for the template, the personalisation or the number).
 */
export async function submitSms(deps: { dir: Directory; sealer: Sealer; region: string }, admitter: Admitter, by: Sender, b: SmsRequest,
  scheduledFor: Date | null = null): Promise<Submitted> {
  const { service, keyType } = by
  const ready = await readyText(deps, service, keyType, b)
  const id = notificationId()
  // Notify checks the limits before the template and the recipient (check_rate_limiting, then
  // validate_template): a request over a limit is answered 429 whatever else is wrong with it, and a
  // refused one still spends its request. Both in the one admission, so no request pays a round trip more.
  const admitted = await admitter.admit({
    service, keyType, request: by.request, texts: 1,
    row: ready instanceof ApiError ? undefined : {
      id, service, templateId: ready.template.id, templateVersion: ready.template.version, apiKeyId: by.apiKeyId, keyType,
      reference: b.reference ?? null, recipientHash: ready.hash, recipientCt: deps.sealer.seal(b.phone_number.trim()),
      personalisationCt: b.personalisation && Object.keys(b.personalisation).length ? deps.sealer.seal(JSON.stringify(b.personalisation)) : null,
      international: ready.international, scheduledFor,
    },
  })
  // Over a limit (429), or, within them, to a number that replied STOP to the service (400: the insert left it out, admit.ts).
  if (!admitted.ok) throw limitError(service, keyType, admitted.limit)
  if (ready instanceof ApiError) throw ready
  return { id, template: ready.template, text: ready.text }
}

/** The template and the text for a request that passed its schema, or Notify's error for it. */
async function readyText(deps: { dir: Directory; sealer: Sealer; region: string }, service: Service, keyType: KeyType, b: SmsRequest) {
  const template = await deps.dir.template(service.id, b.template_id.toLowerCase())
  if (!template) return badRequest('Template not found')
  if (template.archived) return badRequest('Template has been deleted')
  if (b.sms_sender_id) return badRequest(`sms_sender_id ${b.sms_sender_id} does not exist in database for service id ${service.id}`)
  const ready = await prepareText(deps, service, keyType, template, b.phone_number, b.personalisation)
  return ready instanceof ApiError ? ready : { ...ready, template }
}
