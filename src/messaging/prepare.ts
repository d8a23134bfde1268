/**
 * One text checked as GOV.UK Notify checks it before accepting it, for the API and for each row of a
 * bulk job alike: the number, the personalisation, who a team key (or a trial service) may text,
 * international permission, length. Returns the text ready to admit, or Notify's error.
 */
import type { Sealer } from '../privacy/seal.ts'
import type { Directory } from './api/directory.ts'
import { ApiError, badRequest, validation } from './api/errors.ts'
import type { KeyType } from './keys.ts'
import { checkPhone } from './phone.ts'
import type { Service, Template } from './services.ts'
import { render } from './templates.ts'

const SMS_CHAR_LIMIT = 918
export const TEAM_ONLY = 'Can’t send to this recipient using a team-only API key'
export const TRIAL = 'Can’t send to this recipient when service is in trial mode – see https://www.notifications.service.gov.uk/trial-mode'

export interface Prepared { text: string; hash: Buffer; international: boolean }

export async function prepareText(
  ctx: { dir: Directory; sealer: Sealer; region: string }, service: Service, keyType: KeyType, template: Template,
  phoneNumber: string, personalisation: Record<string, unknown> | undefined,
): Promise<Prepared | ApiError> {
  if (template.type !== 'sms') return badRequest(`${template.type} template is not suitable for sms notification`)
  const { text, missing } = render(template.body, personalisation)
  if (missing.length) return badRequest(`Missing personalisation: ${missing.join(', ')}`)
  if (text.length === 0) return badRequest('Your message is empty.')
  const phone = checkPhone(phoneNumber, ctx.region)
  if (!phone.ok) return validation(`phone_number ${phone.message}`)
  const hash = ctx.sealer.hash(phone.e164)
  if (keyType === 'team' && !(await ctx.dir.isRecipient(service.id, hash))) return badRequest(TEAM_ONLY)
  if (keyType === 'normal' && service.restricted && !(await ctx.dir.isRecipient(service.id, hash))) return badRequest(TRIAL)
  if (phone.international && !service.international) return badRequest('Cannot send to international mobile numbers')
  const length = [...text].length
  if (length > SMS_CHAR_LIMIT) {
    return badRequest(`Your message is too long. Text messages cannot be longer than ${SMS_CHAR_LIMIT} characters. Your message is ${length} characters long.`)
  }
  return { text, hash, international: phone.international }
}
