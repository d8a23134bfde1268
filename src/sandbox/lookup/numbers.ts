/**
 * The lookup sandbox's phone numbers: parse what a client put in the URL, and the documented ranges
 * that decide each US number's line type or planned failure from its last four digits (README.md).
 */

export type ValidationError = 'TOO_SHORT' | 'TOO_LONG' | 'INVALID_BUT_POSSIBLE' | 'INVALID_COUNTRY_CODE' | 'NOT_A_NUMBER'
export type LineType = 'mobile' | 'landline' | 'fixedVoip' | 'nonFixedVoip'

export interface ParsedNumber {
  /** E.164 when the digits were parsable, else the input as given. */
  phoneNumber: string
  callingCode: string | null
  country: string | null
  /** Digits after the calling code, when parsable. */
  national: string | null
  error?: ValidationError
}

/** What a lookup of a number answers: a line type, an invalid number, or a failure on its first lookup only. */
export type Plan = { line: LineType } | { invalid: true } | { firstFails: 429 | 500 }

// Calling codes the sandbox knows besides +1 (all of which it takes as the US). Longest match wins.
const COUNTRIES: Record<string, string> = {
  '20': 'EG', '27': 'ZA', '30': 'GR', '31': 'NL', '32': 'BE', '33': 'FR', '34': 'ES', '36': 'HU', '39': 'IT',
  '40': 'RO', '41': 'CH', '43': 'AT', '44': 'GB', '45': 'DK', '46': 'SE', '47': 'NO', '48': 'PL', '49': 'DE',
  '51': 'PE', '52': 'MX', '53': 'CU', '54': 'AR', '55': 'BR', '56': 'CL', '57': 'CO', '58': 'VE',
  '60': 'MY', '61': 'AU', '62': 'ID', '63': 'PH', '64': 'NZ', '65': 'SG', '66': 'TH',
  '7': 'RU', '81': 'JP', '82': 'KR', '84': 'VN', '86': 'CN', '90': 'TR', '91': 'IN', '92': 'PK', '98': 'IR',
  '234': 'NG', '254': 'KE', '351': 'PT', '352': 'LU', '353': 'IE', '354': 'IS', '358': 'FI', '380': 'UA',
  '502': 'GT', '503': 'SV', '504': 'HN', '505': 'NI', '506': 'CR', '507': 'PA', '509': 'HT', '593': 'EC',
  '852': 'HK', '880': 'BD', '886': 'TW', '972': 'IL', '971': 'AE', '966': 'SA',
}

/**
 * A number as Twilio takes it: E.164 (`+` and digits), or national digits, which without a CountryCode
 * Twilio reads as US (10 digits, or 11 starting with the national prefix 1). Spaces, dashes, dots and
 * parentheses are ignored, as a client may send a number formatted for people.
 */
export function parseNumber(input: string): ParsedNumber {
  const s = input.replace(/[\s().-]/g, '')
  if (!/^\+?\d+$/.test(s)) return { phoneNumber: input, callingCode: null, country: null, national: null, error: 'NOT_A_NUMBER' }
  if (!s.startsWith('+')) return us(s.length === 11 && s.startsWith('1') ? s.slice(1) : s)
  const digits = s.slice(1)
  if (digits.startsWith('1')) return us(digits.slice(1))
  const code = [3, 2, 1].map((n) => digits.slice(0, n)).find((c) => COUNTRIES[c])
  if (!code) return { phoneNumber: s, callingCode: null, country: null, national: null, error: 'INVALID_COUNTRY_CODE' }
  // The same lengths as E.164 allows, and as the verification server checks: 8 to 15 digits in all.
  const error = digits.length < 8 ? 'TOO_SHORT' : digits.length > 15 ? 'TOO_LONG' : undefined
  return { phoneNumber: s, callingCode: code, country: COUNTRIES[code], national: digits.slice(code.length), ...(error && { error }) }
}

function us(national: string): ParsedNumber {
  const error = national.length < 10 ? 'TOO_SHORT' : national.length > 10 ? 'TOO_LONG' : undefined
  return { phoneNumber: `+1${national}`, callingCode: '1', country: 'US', national, ...(error && { error }) }
}

/** The documented ranges, by the first digits of a US number's LINE (its last four digits); elsewhere mobile. */
export function planFor(n: ParsedNumber): Plan {
  if (n.callingCode !== '1' || !n.national) return { line: 'mobile' }
  const line = Number(n.national.slice(6, 8)) // the first two digits of the LINE
  if (line < 50) return { line: 'mobile' }
  if (line < 60) return { line: 'landline' }
  if (line < 70) return { line: 'fixedVoip' }
  if (line < 80) return { line: 'nonFixedVoip' }
  if (line < 85) return { invalid: true }
  if (line < 90) return { firstFails: 429 }
  if (line < 95) return { firstFails: 500 }
  return { line: 'mobile' }
}

/** `(212) 555-0100` for a US number, the national digits as they are elsewhere. */
export const nationalFormat = (n: ParsedNumber): string | null => {
  if (!n.national) return null
  const d = n.national
  return n.callingCode === '1' ? `(${d.slice(0, 3)}) ${d.slice(3, 6)}-${d.slice(6)}` : d
}

// Made-up carriers; the mobile ones carry 001/01, the MCC/MNC that ITU reserves for test networks.
export const CARRIERS: Record<LineType, { carrier_name: string; mobile_country_code: string | null; mobile_network_code: string | null }> = {
  mobile: { carrier_name: 'Sandbox Wireless', mobile_country_code: '001', mobile_network_code: '01' },
  landline: { carrier_name: 'Sandbox Telephone Company', mobile_country_code: null, mobile_network_code: null },
  fixedVoip: { carrier_name: 'Sandbox Fixed VoIP', mobile_country_code: null, mobile_network_code: null },
  nonFixedVoip: { carrier_name: 'Sandbox Nomadic VoIP', mobile_country_code: '001', mobile_network_code: '02' },
}
