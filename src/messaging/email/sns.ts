/**
 * Email receipts: Amazon SES reports deliveries, bounces and complaints as Amazon SNS notifications
 * posted to POST /receipts/ses. Each message is verified before anything is read from it:
 *   - its SigningCertURL must be https on an SNS host of amazonaws.com (or, only when Herald is
 *     configured for it, the email sandbox's own origin: HERALD_EMAIL_SNS_CERT_ORIGIN);
 *   - its Signature (SignatureVersion 1: SHA1withRSA, 2: SHA256withRSA) must verify, with that
 *     certificate's key, over SNS's canonical string of the message's fields;
 *   - its TopicArn must be one Herald was told to take (HERALD_EMAIL_SNS_TOPICS): anyone can have
 *     AWS sign a message on a topic of their own, so the signature alone proves nothing about whose.
 * A refusal is a 403 in Notify's error shape (SNS retries it: a real message refused by a config
 * slip shows in SNS's delivery logs instead of vanishing). A subscription confirmation is confirmed
 * by fetching its SubscribeURL (from the same hosts only). A verified notification:
 *   Delivery                  a receipt: delivered
 *   Bounce (Permanent)        a receipt: permanent-failure
 *   Bounce (Transient, …)     a receipt: temporary-failure
 *   Complaint                 kept in email_complaints (the notification keeps its status, as in GOV.UK Notify)
 * Receipts go to sms_receipts, found by (provider, SES message id) and applied by the receipts engine.
 */
import { createPublicKey, createVerify, type KeyObject, X509Certificate } from 'node:crypto'
import type { FastifyInstance, FastifyReply } from 'fastify'
import type { Db } from '../../db/types.ts'
import type { Logger } from '../../log.ts'

const SNS_HOST = /^sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?$/
const NOTIFICATION_FIELDS = ['Message', 'MessageId', 'Subject', 'Timestamp', 'TopicArn', 'Type']
const SUBSCRIPTION_FIELDS = ['Message', 'MessageId', 'SubscribeURL', 'Timestamp', 'Token', 'TopicArn', 'Type']

export type SnsMessage = Record<string, string | undefined>

/** SNS's canonical string of a message: each signed field present, as "Name\nvalue\n", in this order. */
export function snsStringToSign(m: SnsMessage): string | undefined {
  const fields = m.Type === 'Notification' ? NOTIFICATION_FIELDS
    : m.Type === 'SubscriptionConfirmation' || m.Type === 'UnsubscribeConfirmation' ? SUBSCRIPTION_FIELDS : undefined
  if (!fields) return undefined
  return fields.filter((f) => typeof m[f] === 'string').map((f) => `${f}\n${m[f]}\n`).join('')
}

export interface SnsVerifierOptions {
  /** Besides SNS's own hosts, one origin whose certificates are taken (the sandbox's), e.g. http://127.0.0.1:8995. */
  extraOrigin?: string
  timeoutMs?: number
}

/** Verifies SNS messages; certificates fetched once each and kept. */
export class SnsVerifier {
  private readonly keys = new Map<string, Promise<KeyObject>>()
  constructor(private readonly opts: SnsVerifierOptions = {}) {}

  /** Whether a URL is one Herald may fetch for SNS: a certificate or a subscription link. */
  trusted(raw: string | undefined): boolean {
    if (!raw) return false
    let u: URL
    try { u = new URL(raw) } catch { return false }
    if (this.opts.extraOrigin && u.origin === new URL(this.opts.extraOrigin).origin) return true
    return u.protocol === 'https:' && SNS_HOST.test(u.hostname) && (u.port === '' || u.port === '443')
  }

  /** Why a message is refused, or undefined when it is signed as SNS signs. */
  async problem(m: SnsMessage): Promise<string | undefined> {
    const text = snsStringToSign(m)
    if (!text) return 'not an SNS message type Herald reads'
    const algorithm = m.SignatureVersion === '1' ? 'RSA-SHA1' : m.SignatureVersion === '2' ? 'RSA-SHA256' : undefined
    if (!algorithm) return 'unknown SignatureVersion'
    if (!m.Signature) return 'no Signature'
    if (!this.trusted(m.SigningCertURL) || !new URL(m.SigningCertURL!).pathname.endsWith('.pem')) return 'SigningCertURL is not an SNS certificate'
    let key: KeyObject
    try { key = await this.key(m.SigningCertURL!) } catch { return 'the signing certificate could not be fetched' }
    const ok = createVerify(algorithm).update(text, 'utf8').verify(key, m.Signature, 'base64')
    return ok ? undefined : 'bad Signature'
  }

  private key(url: string): Promise<KeyObject> {
    let k = this.keys.get(url)
    if (!k) {
      k = (async () => {
        const res = await fetch(url, { signal: AbortSignal.timeout(this.opts.timeoutMs ?? 5000), redirect: 'error' })
        if (!res.ok) throw new Error(`certificate: HTTP ${res.status}`)
        const pem = await res.text()
        // AWS serves X.509 certificates; the sandbox serves its public key alone.
        return pem.includes('BEGIN CERTIFICATE') ? new X509Certificate(pem).publicKey : createPublicKey(pem)
      })()
      k.catch(() => this.keys.delete(url))
      this.keys.set(url, k)
    }
    return k
  }
}

/** What SES says of one email, as Herald records it. */
export function sesOutcome(event: Record<string, any>): { kind: 'receipt'; status: string; detail: object } | { kind: 'complaint'; type: string | null; feedbackId: string | null } | undefined {
  const type = event.eventType ?? event.notificationType
  if (type === 'Delivery') return { kind: 'receipt', status: 'delivered', detail: { type } }
  if (type === 'Bounce') {
    const b = event.bounce ?? {}
    return { kind: 'receipt', status: b.bounceType === 'Permanent' ? 'permanent-failure' : 'temporary-failure',
      // error_code: what the failure reasons (send/failure-reasons.ts) keep as the provider's code.
      detail: { type, bounce_type: b.bounceType ?? null, bounce_sub_type: b.bounceSubType ?? null, error_code: `${b.bounceType ?? 'Undetermined'}/${b.bounceSubType ?? 'Undetermined'}` } }
  }
  if (type === 'Complaint') return { kind: 'complaint', type: event.complaint?.complaintFeedbackType ?? null, feedbackId: event.complaint?.feedbackId ?? null }
  return undefined
}

export interface SnsRouteOptions {
  db: Db
  log: Logger
  verifier: SnsVerifier
  /** The topics whose messages are taken. */
  topics: string[]
  /** The email provider receipts are for (its sends were recorded under this name). */
  provider: string
}

export function sesReceiptRoutes(opts: SnsRouteOptions) {
  const { db, log, verifier } = opts
  const refuse = (reply: FastifyReply, why: string) => {
    log.warn({ why }, 'SNS message refused')
    return reply.code(403).send({ status_code: 403, errors: [{ error: 'AuthError', message: `Invalid SNS message: ${why}` }] })
  }
  return (app: FastifyInstance) => {
    void app.register(async (scope) => {
      // SNS posts JSON as text/plain.
      scope.addContentTypeParser(['text/plain', 'application/json'], { parseAs: 'string' }, (_req, body, done) => {
        try { done(null, JSON.parse(body as string)) } catch { done(null, {}) }
      })
      scope.post('/receipts/ses', async (req, reply) => {
        const m = (typeof req.body === 'object' && req.body !== null ? req.body : {}) as SnsMessage
        const why = await verifier.problem(m)
        if (why) return refuse(reply, why)
        if (!opts.topics.includes(m.TopicArn ?? '')) return refuse(reply, 'not a topic Herald takes (HERALD_EMAIL_SNS_TOPICS)')
        if (m.Type === 'SubscriptionConfirmation') {
          if (!verifier.trusted(m.SubscribeURL)) return refuse(reply, 'SubscribeURL is not SNS')
          const res = await fetch(m.SubscribeURL!, { signal: AbortSignal.timeout(5000), redirect: 'error' })
          log.info({ topic: m.TopicArn, status: res.status }, 'SNS subscription confirmed')
          return reply.code(200).send()
        }
        if (m.Type !== 'Notification') return reply.code(200).send()
        let event: Record<string, any>
        try { event = JSON.parse(m.Message ?? '') } catch { return reply.code(400).send({ status_code: 400, errors: [{ error: 'BadRequestError', message: 'Message is not JSON' }] }) }
        const ref = event.mail?.messageId
        const outcome = sesOutcome(event)
        if (typeof ref !== 'string' || !outcome) return reply.code(200).send() // an event type Herald does not record (Send, Open, …)
        if (outcome.kind === 'receipt') {
          await db.query(`INSERT INTO sms_receipts (notification_id, provider, provider_ref, status, detail) VALUES (NULL, $1, $2, $3, $4)`,
            [opts.provider, ref, outcome.status, outcome.detail])
        } else {
          await db.query(`INSERT INTO email_complaints (provider, provider_ref, complaint_type, feedback_id) VALUES ($1, $2, $3, $4)`,
            [opts.provider, ref, outcome.type, outcome.feedbackId])
        }
        return reply.code(200).send()
      })
    })
  }
}

/** A service's complaints, newest first, with the notification each is about (when it is still kept). */
export async function complaintsOf(db: Db, serviceId: string): Promise<{ notificationId: string; type: string | null; receivedAt: Date }[]> {
  const rows = await db.query(
    `SELECT n.id, c.complaint_type, c.received_at FROM email_complaints c
     JOIN notifications n ON n.provider = c.provider AND n.provider_ref = c.provider_ref
     WHERE n.service_id = $1 ORDER BY c.received_at DESC`, [serviceId])
  return rows.map((r) => ({ notificationId: r.id, type: r.complaint_type, receivedAt: new Date(r.received_at) }))
}
