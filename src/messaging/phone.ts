/**
 * A recipient's number checked as GOV.UK Notify checks it, with its messages, but for
 * HERALD_PHONE_REGION (US by default) instead of the UK: parsed and validated with libphonenumber's
 * full metadata; a number of another country needs the service's international permission.
 */
import { parsePhoneNumberFromString, validatePhoneNumberLength, type CountryCode } from 'libphonenumber-js/max'

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
  if (!parsed || !parsed.isValid()) return { ok: false, message: 'Number is not valid – double check the phone number you entered' }
  return { ok: true, e164: parsed.number, international: parsed.country !== region, callingCode: parsed.countryCallingCode }
}
