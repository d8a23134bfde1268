/**
 * The simulated fate of a text. The recipient's last four digits choose it (the ranges are in
 * README.md), so a test picks an outcome by picking a number; any other number draws from the
 * `outcomes` mix. Each fate is then spelled in each provider's words: the statuses its receipts carry
 * and the error codes a receiver needs to tell a failure a retry may cure from one it never will.
 */

/** What becomes of an accepted text. */
export type Outcome = 'delivered' | 'temporaryFailure' | 'permanentFailure' | 'landline' | 'unknownError' | 'noReceipt' | 'carrierBlocked' | 'optedOut'
/** An outcome, or refused on the create call as an invalid number (never accepted). */
export type Fate = Outcome | 'invalidNumber'

/** Weights of the outcomes drawn for numbers outside the ranges; they need not add up to 1. */
export interface OutcomeMix { delivered: number; temporaryFailure: number; permanentFailure: number }
export const MIX_KEYS = ['delivered', 'temporaryFailure', 'permanentFailure'] as const
export const ALL_DELIVERED: OutcomeMix = { delivered: 1, temporaryFailure: 0, permanentFailure: 0 }

/** By the first two of the number's last four digits: 70xx, 71xx, ... */
const RANGES: Record<string, Fate> = {
  70: 'permanentFailure', 71: 'temporaryFailure', 72: 'noReceipt', 73: 'invalidNumber', 74: 'landline', 75: 'unknownError',
  76: 'carrierBlocked', 77: 'optedOut',
}

/** The fate a number's last four digits choose, or undefined when they choose none. */
export function fateByNumber(to: string): Fate | undefined {
  const digits = to.replace(/\D/g, '')
  return digits.length >= 4 ? RANGES[digits.slice(-4, -2)] : undefined
}

/** True when drawing from the mix could give anything but delivered: only then is a draw spent. */
export const mixCanFail = (mix: OutcomeMix) => mix.temporaryFailure > 0 || mix.permanentFailure > 0

/** One draw in [0, 1) picks an outcome by weight; a mix of all zeros delivers. */
export function drawOutcome(mix: OutcomeMix, r: number): Outcome {
  const weights = MIX_KEYS.map((k) => Math.max(0, mix[k]))
  let at = r * weights.reduce((a, b) => a + b, 0)
  for (let i = 0; i < MIX_KEYS.length; i++) {
    if (at < weights[i]) return MIX_KEYS[i]
    at -= weights[i]
  }
  return 'delivered'
}

/**
 * Twilio: `sent` when the text leaves for the carrier, then the final status with its ErrorCode
 * (https://www.twilio.com/docs/api/errors). `undelivered` is the carrier's refusal; `failed` means the
 * text never left Twilio, so no `sent` comes before it.
 */
export const TWILIO: Record<Outcome, { sent: boolean; final?: 'delivered' | 'undelivered' | 'failed'; errorCode?: number }> = {
  delivered: { sent: true, final: 'delivered' },
  temporaryFailure: { sent: true, final: 'undelivered', errorCode: 30003 }, // unreachable destination handset
  permanentFailure: { sent: true, final: 'undelivered', errorCode: 30005 }, // unknown destination handset
  landline: { sent: true, final: 'undelivered', errorCode: 30006 }, // landline or unreachable carrier
  unknownError: { sent: false, final: 'failed', errorCode: 30008 },
  noReceipt: { sent: true },
  carrierBlocked: { sent: true, final: 'undelivered', errorCode: 30007 }, // message filtered (carrier violation)
  // Never accepted: Twilio refuses the send to a number that replied STOP (400, 21610); kept for completeness.
  optedOut: { sent: false, final: 'failed', errorCode: 21610 },
}

/**
 * Vonage: one delivery receipt per part, with the final status and its err-code
 * (https://developer.vonage.com/en/messaging/sms/guides/delivery-receipts); none for `noReceipt`.
 */
export const VONAGE: Record<Outcome, { final?: 'delivered' | 'expired' | 'failed'; errCode?: string }> = {
  delivered: { final: 'delivered', errCode: '0' },
  temporaryFailure: { final: 'expired', errCode: '2' }, // absent subscriber, temporary
  permanentFailure: { final: 'failed', errCode: '3' }, // absent subscriber, permanent
  landline: { final: 'failed', errCode: '12' }, // destination unreachable
  unknownError: { final: 'failed', errCode: '99' }, // general error
  noReceipt: {},
  carrierBlocked: { final: 'failed', errCode: '14' }, // number blocked by carrier
  // Vonage accepts the send, then the receipt fails it with err-code 9 (the number opted out of this sender):
  // https://developer.vonage.com/en/opt-out-assist/guides/messaging-opted-out-numbers
  optedOut: { final: 'failed', errCode: '9' },
}
