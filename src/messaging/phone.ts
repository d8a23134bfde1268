/**
 * A recipient's number checked as GOV.UK Notify checks it, with its messages, but for
 * HERALD_PHONE_REGION (US by default) instead of the UK: parsed and validated with libphonenumber's
 * full metadata; a number of another country needs the service's international permission.
 * Only the kinds of number Notify texts (notifications-utils' PhoneNumber ALLOW_LIST): premium-rate
 * (+1 900), toll-free (+1 800, 888, …), shared-cost, VoIP, pager and voicemail numbers are refused
 * as Notify refuses them, as not valid.
 */
import { parsePhoneNumberFromString, validatePhoneNumberLength, type CountryCode, type NumberType } from 'libphonenumber-js/max'

const TEXTABLE = new Set<NumberType>(['FIXED_LINE', 'MOBILE', 'FIXED_LINE_OR_MOBILE', 'UAN', 'PERSONAL_NUMBER'])
const NOT_VALID = 'Number is not valid – double check the phone number you entered'

export type PhoneCheck =
  | { ok: true; e164: string; international: boolean; callingCode: string }
  | { ok: false; message: string; international?: boolean }

// The API checks a number at its schema stage and again with the rest of the text: keep the last answer.
let last: { raw: string; region: string; result: PhoneCheck } | undefined

export function checkPhone(raw: string, region: string): PhoneCheck {
  if (last && last.raw === raw && last.region === region) return last.result
  const result = check(raw, region)
  last = { raw, region, result }
  return result
}

function check(raw: string, region: string): PhoneCheck {
  const text = raw.trim()
  if (/[^\d\s()+\-.]/.test(text)) return { ok: false, message: 'Must not contain letters or symbols' }
  const length = validatePhoneNumberLength(text, region as CountryCode)
  if (length === 'TOO_SHORT' || length === 'NOT_A_NUMBER' || text.replace(/\D/g, '') === '') return { ok: false, message: 'Not enough digits' }
  if (length === 'TOO_LONG') return { ok: false, message: 'Too many digits' }
  if (length === 'INVALID_COUNTRY') return { ok: false, message: 'Not a valid country prefix' }
  const parsed = parsePhoneNumberFromString(text, region as CountryCode)
  if (!parsed || !parsed.isValid() || !TEXTABLE.has(parsed.getType()!)) return { ok: false, message: NOT_VALID }
  return { ok: true, e164: parsed.number, international: parsed.country !== region, callingCode: parsed.countryCallingCode }
}
