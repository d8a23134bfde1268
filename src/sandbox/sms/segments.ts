/**
 * How a text splits into SMS parts, as both providers count them: GSM-7 fits 160 septets in one part
 * and 153 in each part of a longer text (the rest of the 140 bytes hold the concatenation header),
 * where the extension characters (^{}\[~]|€ and form feed) take two septets and are never split from
 * their escape; UCS-2 fits 70 UTF-16 units, then 67 a part, never splitting a surrogate pair.
 */

const BASIC = '@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !"#¤%&\'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà'
const EXTENSION = '^{}\\[~]|€\f'
const GSM = new Set([...BASIC, ...EXTENSION])

export type Encoding = 'gsm' | 'ucs2'

/** GSM-7 when every character is in its basic or extension table, else UCS-2 (as Twilio chooses). */
export const encodingOf = (text: string): Encoding => ([...text].every((c) => GSM.has(c)) ? 'gsm' : 'ucs2')

/** The parts of `text` in `encoding`. A character outside GSM-7 sent as GSM counts one septet (the provider substitutes it). */
export function split(text: string, encoding: Encoding): string[] {
  const [single, each] = encoding === 'gsm' ? [160, 153] : [70, 67]
  // Each unit of a part: one character with its size (septets, or UTF-16 units).
  const units = [...text].map((c) => ({ c, size: encoding === 'gsm' ? (EXTENSION.includes(c) ? 2 : 1) : c.length }))
  if (units.reduce((n, u) => n + u.size, 0) <= single) return [text]
  const parts: string[] = []
  let part = ''
  let size = 0
  for (const u of units) {
    if (size + u.size > each) {
      parts.push(part)
      part = ''
      size = 0
    }
    part += u.c
    size += u.size
  }
  parts.push(part)
  return parts
}
