/**
 * Email addresses checked as GOV.UK Notify's notifications-utils validate_email_address checks them,
 * and the form kept for hashing: trimmed, lower case (so one person is one keyed hash, however written).
 */
const VALID_LOCAL_CHARS = /^[a-zA-Z0-9.!#$%&'*+/=?^_`{|}~\-]+$/
const HOSTNAME_PART = /^(xn|[a-z0-9]+)(-?-[a-z0-9]+)*$/i
const TLD_PART = /^([a-z]{2,63}|xn--([a-z0-9]+-)*[a-z0-9]+)$/i

export type EmailCheck = { ok: true; address: string; normal: string } | { ok: false; message: string }

export function checkEmail(raw: string): EmailCheck {
  const bad = { ok: false, message: 'Not a valid email address' } as const
  // Notify strips whitespace and the invisible characters that copying from documents brings along.
  const address = raw.replace(/[\u200B\u200C\u200D\u2060\uFEFF\u00A0]/g, '').trim()
  if (address.length > 320 || /\s/.test(address) || address.includes('..')) return bad
  const at = address.lastIndexOf('@')
  if (at <= 0) return bad
  const local = address.slice(0, at)
  const host = address.slice(at + 1)
  if (!VALID_LOCAL_CHARS.test(local) || host.length > 253 || host.length === 0) return bad
  let ascii: string
  try { ascii = new URL(`http://${host}`).hostname } catch { return bad }
  const parts = ascii.split('.')
  if (parts.length < 2) return bad
  for (const p of parts) if (!p || p.length > 63 || !HOSTNAME_PART.test(p)) return bad
  if (!TLD_PART.test(parts[parts.length - 1])) return bad
  return { ok: true, address, normal: address.toLowerCase() }
}
