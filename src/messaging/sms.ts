/**
 * SMS fragments, the unit providers bill by. GSM-7 text: one fragment up to 160 characters, else
 * 153 a fragment (the rest carries the concatenation header); the extended characters take two.
 * Any character outside GSM-7 makes the whole text UCS-2: 70, else 67 a fragment.
 */
const GSM_BASIC = new Set(
  '@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !"#¤%&\'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà',
)
const GSM_EXTENDED = new Set('^{}\\[~]|€\f')

export interface SmsLength {
  encoding: 'gsm' | 'ucs2'
  /** Characters as the encoding counts them (GSM-7: extended ones twice; UCS-2: UTF-16 code units). */
  units: number
  fragments: number
}

export function smsLength(text: string): SmsLength {
  let units = 0
  for (const ch of text) {
    if (GSM_BASIC.has(ch)) units += 1
    else if (GSM_EXTENDED.has(ch)) units += 2
    else {
      const ucs2 = text.length // UTF-16 code units: a character outside the BMP takes two, as on the wire
      return { encoding: 'ucs2', units: ucs2, fragments: ucs2 <= 70 ? 1 : Math.ceil(ucs2 / 67) }
    }
  }
  return { encoding: 'gsm', units, fragments: units <= 160 ? 1 : Math.ceil(units / 153) }
}
