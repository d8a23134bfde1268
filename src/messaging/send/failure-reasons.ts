/**
 * Why a text failed, in words a person can act on. Each provider's own codes (Twilio's error codes,
 * Vonage's delivery-receipt err-codes and its submit statuses) map to one short reason:
 *
 *   invalid number   the number is wrong or no longer in service: check it with the resident
 *   landline         the number cannot receive texts: ask for a mobile number
 *   carrier blocked  the carrier refused or filtered it: check the sender's registration and content
 *   opted out        the resident replied STOP to this sender: do not text them again
 *   unreachable      the phone or its network could not be reached: a later try may work
 *   provider error   the provider's account or configuration refused it: for whoever runs Herald
 *   unknown          the provider gave no reason
 *
 * Stored beside the status (notifications.failure_reason) with the code it came from
 * (notifications.failure_code), written so that the two providers' codes never collide:
 * `twilio 30006`, `vonage err-code 9` (a delivery receipt), `vonage status 6` (the answer to the
 * send itself). A code not in the tables is kept as it came, with the reason `unknown`.
 */

export type FailureReason = 'invalid number' | 'landline' | 'carrier blocked' | 'opted out' | 'unreachable' | 'provider error' | 'unknown'

export const FAILURE_REASONS: readonly FailureReason[] =
  ['invalid number', 'landline', 'carrier blocked', 'opted out', 'unreachable', 'provider error', 'unknown']

export interface Failure { reason: FailureReason; code: string | null }

/**
 * Twilio's error codes, as its status callbacks carry them (ErrorCode, on `undelivered` and
 * `failed`) and as the Messages API answers a refused send (the JSON body's `code`). Source: the
 * error dictionary, https://www.twilio.com/docs/api/errors/{code}.
 */
const TWILIO: Record<string, FailureReason> = {
  // Delivery (status callbacks).
  30001: 'provider error', // Queue overflow: sent faster than the account's queue drains
  30002: 'provider error', // Account suspended between queueing and sending
  30003: 'unreachable', // Unreachable destination handset: off, out of coverage
  30004: 'carrier blocked', // Message blocked: the destination is blocked from receiving this message
  30005: 'invalid number', // Unknown destination handset: the number is unknown and may no longer exist
  30006: 'landline', // Landline or unreachable carrier
  30007: 'carrier blocked', // Message filtered: carrier violation (spam filtering, content)
  30008: 'unknown', // Unknown error
  30010: 'provider error', // Message price exceeds the configured max price
  30032: 'carrier blocked', // Toll-free number has not been verified
  30034: 'carrier blocked', // Message from an unregistered number (US A2P 10DLC)
  // Refusals of the send itself (Messages API).
  21211: 'invalid number', // Invalid 'To' phone number
  21214: 'invalid number', // 'To' phone number cannot be reached
  21408: 'provider error', // Permission to send an SMS has not been enabled for the region
  21610: 'opted out', // Attempt to send to unsubscribed recipient (replied STOP)
  21612: 'unreachable', // The 'To' phone number is not currently reachable via SMS
  21614: 'landline', // 'To' number is not a valid mobile number
  21635: 'landline', // 'To' number cannot be a landline
}

/**
 * Vonage's delivery-receipt err-codes (the DLR's `err-code`; 0 is delivered). Source: "Vonage SMS
 * Delivery Error Codes", https://api.support.vonage.com/hc/en-us/articles/204014733; 9 is a resident's
 * STOP: https://developer.vonage.com/en/opt-out-assist/guides/messaging-opted-out-numbers.
 */
const VONAGE_DLR: Record<string, FailureReason> = {
  1: 'unknown', // Unknown: not delivered, no cause could be determined
  2: 'unreachable', // Absent Subscriber - Temporary: handset temporarily unavailable
  3: 'invalid number', // Absent Subscriber - Permanent: the number is no longer active
  4: 'carrier blocked', // Call Barred by User: a bar the user must ask their operator to lift
  5: 'provider error', // Portability Error: the number's porting, for the network operator
  6: 'carrier blocked', // Anti-Spam Rejection: the carrier's anti-spam filter
  7: 'unreachable', // Handset Busy
  8: 'unreachable', // Network Error
  9: 'opted out', // Illegal Number: the user asked not to receive messages from this sender
  10: 'provider error', // Illegal Message: an error in a message parameter (e.g. the encoding flag)
  11: 'unreachable', // Unroutable: Vonage found no route for the message
  12: 'unreachable', // Destination Unreachable: no route to the number (confirm the number)
  13: 'carrier blocked', // Subscriber Age Restriction
  14: 'carrier blocked', // Number Blocked by Carrier: the recipient must ask their carrier to allow SMS
  15: 'provider error', // Pre-Paid - Insufficient Funds
  99: 'unknown', // General Error
}

/**
 * Vonage's SMS API statuses, in its answer to the send (`messages[].status`; 0 is accepted). Source:
 * https://developer.vonage.com/en/messaging/sms/guides/troubleshooting-sms and
 * https://developer.vonage.com/api-errors/sms. Herald checks its own parameters before sending, so an
 * invalid parameter (3) is the number.
 */
const VONAGE_SUBMIT: Record<string, FailureReason> = {
  1: 'provider error', // Throttled
  2: 'provider error', // Missing Parameters
  3: 'invalid number', // Invalid Parameters (the `to`)
  4: 'provider error', // Invalid Credentials
  5: 'provider error', // Internal Error
  6: 'invalid number', // Invalid Message: e.g. an unrecognized number prefix
  7: 'carrier blocked', // Number Barred: the number is blacklisted and may not receive messages
  8: 'provider error', // Partner Account Barred
  9: 'provider error', // Partner Quota Violation: not enough credit
  15: 'provider error', // Invalid Sender Address: a sender ID not allowed for the destination
  29: 'provider error', // Non-Whitelisted Destination (a trial account)
  33: 'invalid number', // Number De-activated
}

const known = (table: Record<string, FailureReason>, code: string) => (Object.hasOwn(table, code) ? table[code] : 'unknown')
const codeOf = (code: unknown) => (typeof code === 'number' ? String(code) : typeof code === 'string' ? code.trim() : '')

/** A Twilio ErrorCode (callback) or API error code (refused send); null when there is none. */
export function twilioFailure(code: unknown): Failure | null {
  const c = codeOf(code)
  return c ? { reason: known(TWILIO, c), code: `twilio ${c}` } : null
}

/** A Vonage delivery receipt's err-code; null when there is none or it is 0 (delivered). */
export function vonageReceiptFailure(errCode: unknown): Failure | null {
  const c = codeOf(errCode)
  return c && c !== '0' ? { reason: known(VONAGE_DLR, c), code: `vonage err-code ${c}` } : null
}

/** A Vonage send answer's status; null when there is none or it is 0 (accepted). */
export function vonageSubmitFailure(status: unknown): Failure | null {
  const c = codeOf(status)
  return c && c !== '0' ? { reason: known(VONAGE_SUBMIT, c), code: `vonage status ${c}` } : null
}

/**
 * The failure a stored delivery receipt tells of (sms_receipts.detail holds the provider's own
 * error code as it came). A failed receipt without a code is `unknown`; any other, null.
 */
export function receiptFailure(provider: string, status: string, errorCode: unknown): Failure | null {
  if (!FAILED.has(status)) return null
  const f = provider === 'twilio' ? twilioFailure(errorCode) : provider === 'vonage' ? vonageReceiptFailure(errorCode) : null
  return f ?? { reason: 'unknown', code: codeOf(errorCode) ? `${provider} ${codeOf(errorCode)}` : null }
}

const FAILED = new Set(['temporary-failure', 'permanent-failure', 'technical-failure'])
