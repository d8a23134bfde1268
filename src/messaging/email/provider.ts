/**
 * One interface for every email provider (as send/provider.ts for SMS). A send returns the
 * provider's id for the email, the reference its bounces, complaints and deliveries name; or fails
 * with what is known of it (ProviderError's kinds, as for texts):
 *   recipient  the provider refused the address itself: the email fails for good;
 *   retry      the provider surely did not take it (no connection, a 4xx SMTP reply, SES throttling or 5xx);
 *   unknown    it may have been taken (no answer after the message was sent): trying again could send it twice.
 */
export { ProviderError } from '../send/provider.ts'

export interface OutgoingEmail {
  /** The notification id, sent as a header so a message can be traced back. */
  id: string
  to: string
  from: string
  replyTo: string | null
  subject: string
  html: string
  text: string
  /** RFC 8058 one-click unsubscribe: sent as List-Unsubscribe with List-Unsubscribe-Post. */
  unsubscribeUrl: string | null
}

export interface EmailProvider {
  /** smtp or ses: the name receipts and notifications.provider carry. */
  readonly name: string
  send(email: OutgoingEmail): Promise<string>
  close(): Promise<void>
}

/** The headers Herald adds to every email. */
export function emailHeaders(e: OutgoingEmail): Record<string, string> {
  const h: Record<string, string> = { 'X-Herald-Notification-Id': e.id }
  if (e.unsubscribeUrl) {
    h['List-Unsubscribe'] = `<${e.unsubscribeUrl}>`
    h['List-Unsubscribe-Post'] = 'List-Unsubscribe=One-Click'
  }
  return h
}
