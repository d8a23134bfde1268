/**
 * What becomes of a text in the SMS sandbox, chosen by its number so a test picks an outcome by
 * picking a number (last four digits), else drawn from the `outcomes` knob:
 *   7000–7099  permanent failure   (Twilio undelivered 30005; Vonage failed, err-code 27)
 *   7100–7199  temporary failure   (Twilio undelivered 30003; Vonage expired, err-code 6)
 *   7200–7299  no receipt at all   (stays as sent)
 *   7300–7399  refused at once as an invalid number (Twilio 400 code 21211; Vonage status 3)
 */
export type Fate = 'delivered' | 'temporary' | 'permanent' | 'silent' | 'invalid'

export interface OutcomeMix { delivered: number; temporaryFailure: number; permanentFailure: number }

export function fateOf(to: string, mix: OutcomeMix, draw: () => number): Fate {
  const last4 = Number(to.replace(/\D/g, '').slice(-4))
  if (last4 >= 7000 && last4 < 7100) return 'permanent'
  if (last4 >= 7100 && last4 < 7200) return 'temporary'
  if (last4 >= 7200 && last4 < 7300) return 'silent'
  if (last4 >= 7300 && last4 < 7400) return 'invalid'
  const total = mix.delivered + mix.temporaryFailure + mix.permanentFailure
  const r = draw() * (total || 1)
  return r < mix.delivered || total === 0 ? 'delivered' : r < mix.delivered + mix.temporaryFailure ? 'temporary' : 'permanent'
}
