/**
 * What becomes of an email in the sandbox, by the address's local part (before any +tag), as SES's
 * mailbox simulator does it (bounce@simulator.amazonses.com, complaint@…):
 *   bounce@…         a permanent bounce (SES: Bounce, Permanent / General)
 *   soft-bounce@…    a transient bounce (SES: Bounce, Transient / MailboxFull)
 *   complaint@…      delivered, then a complaint (SES: Delivery, then Complaint / abuse)
 *   anything else    delivered
 */
export type EmailFate = 'delivered' | 'bounce' | 'soft-bounce' | 'complaint'

export function fateByAddress(address: string): EmailFate {
  const local = address.toLowerCase().split('@')[0].split('+')[0]
  return local === 'bounce' || local === 'soft-bounce' || local === 'complaint' ? local : 'delivered'
}

/** The SES events (the SNS Message bodies) an email's fate makes, in order. */
export function sesEvents(fate: EmailFate, mail: { messageId: string; source: string; destination: string[]; timestamp: string }, now: string): object[] {
  const recipients = mail.destination.map((emailAddress) => ({ emailAddress }))
  const delivery = { notificationType: 'Delivery', mail, delivery: { timestamp: now, recipients: mail.destination, processingTimeMillis: 1, smtpResponse: '250 ok' } }
  switch (fate) {
    case 'bounce':
      return [{ notificationType: 'Bounce', mail, bounce: { bounceType: 'Permanent', bounceSubType: 'General', bouncedRecipients: recipients, timestamp: now,
        feedbackId: `${mail.messageId}-bounce` } }]
    case 'soft-bounce':
      return [{ notificationType: 'Bounce', mail, bounce: { bounceType: 'Transient', bounceSubType: 'MailboxFull', bouncedRecipients: recipients, timestamp: now,
        feedbackId: `${mail.messageId}-bounce` } }]
    case 'complaint':
      return [delivery, { notificationType: 'Complaint', mail, complaint: { complainedRecipients: recipients, timestamp: now, complaintFeedbackType: 'abuse',
        feedbackId: `${mail.messageId}-complaint` } }]
    default:
      return [delivery]
  }
}
