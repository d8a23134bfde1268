/**
 * SES notifications through Amazon SNS: only a message whose signature verifies with a certificate
 * from an allowed host, on a topic Herald takes, is recorded; anything else is refused with 403.
 */
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import type { FastifyInstance } from 'fastify'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { createSign, generateKeyPairSync, randomUUID } from 'node:crypto'
import { startHttpServer } from '../../src/http/server.ts'
import { createLogger } from '../../src/log.ts'
import { sesReceiptRoutes, SnsVerifier, snsStringToSign } from '../../src/messaging/email/sns.ts'
import { SesEmail } from '../../src/messaging/email/ses.ts'
import { ProviderError } from '../../src/messaging/email/provider.ts'
import { messagingWorld } from '../helpers/messaging.ts'

const w = messagingWorld()
const TOPIC = 'arn:aws:sns:us-east-1:123456789012:herald-ses'
const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 })
const other = generateKeyPairSync('rsa', { modulusLength: 2048 })
let certServer: Server
let certOrigin: string
let app: FastifyInstance
let url: string
let subscribed = 0

beforeAll(async () => {
  certServer = createServer((req, res) => {
    if (req.url === '/cert.pem') return void res.end(publicKey.export({ type: 'spki', format: 'pem' }))
    if (req.url?.startsWith('/subscribe')) { subscribed++; return void res.end('<ConfirmSubscriptionResponse/>') }
    res.writeHead(404).end()
  })
  await new Promise<void>((ok) => certServer.listen(0, '127.0.0.1', ok))
  certOrigin = `http://127.0.0.1:${(certServer.address() as AddressInfo).port}`
  app = await startHttpServer('127.0.0.1', 0, [sesReceiptRoutes({ db: w.t.db, log: createLogger('silent'), verifier: new SnsVerifier({ extraOrigin: certOrigin }),
    topics: [TOPIC], provider: 'ses' })])
  url = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}/receipts/ses`
})
afterAll(async () => {
  await app?.close()
  await new Promise<void>((ok) => certServer.close(() => ok()))
})
beforeEach(() => { subscribed = 0 })

function signed(fields: Record<string, string>, key = privateKey, version = '2') {
  const m: Record<string, string> = { MessageId: randomUUID(), TopicArn: TOPIC, Timestamp: new Date().toISOString(), SignatureVersion: version,
    SigningCertURL: `${certOrigin}/cert.pem`, ...fields }
  m.Signature = createSign(version === '1' ? 'RSA-SHA1' : 'RSA-SHA256').update(snsStringToSign(m)!, 'utf8').sign(key, 'base64')
  return m
}
const bounce = (ref: string, bounceType = 'Permanent') => ({ Type: 'Notification',
  Message: JSON.stringify({ notificationType: 'Bounce', mail: { messageId: ref }, bounce: { bounceType, bounceSubType: 'General' } }) })
const post = (m: object) => fetch(url, { method: 'POST', headers: { 'content-type': 'text/plain; charset=UTF-8' }, body: JSON.stringify(m) })
const receipts = () => w.t.db.query('SELECT provider, provider_ref, status FROM sms_receipts ORDER BY id')

describe('POST /receipts/ses', () => {
  it('records a verified bounce (SignatureVersion 1 and 2) as a receipt', async () => {
    expect((await post(signed(bounce('ses-1')))).status).toBe(200)
    expect((await post(signed(bounce('ses-2', 'Transient'), privateKey, '1')))).toMatchObject({ status: 200 })
    expect(await receipts()).toEqual([{ provider: 'ses', provider_ref: 'ses-1', status: 'permanent-failure' },
      { provider: 'ses', provider_ref: 'ses-2', status: 'temporary-failure' }])
  })

  it('refuses a bad signature, a tampered message, another key, another topic, and a certificate off SNS’s hosts', async () => {
    const good = signed(bounce('ses-3'))
    const cases = [
      { ...good, Signature: Buffer.from('nonsense').toString('base64') },
      { ...good, Message: good.Message.replace('ses-3', 'ses-4') },
      signed(bounce('ses-5'), other.privateKey),
      signed({ ...bounce('ses-6'), TopicArn: 'arn:aws:sns:us-east-1:999999999999:someone-else' }),
      { ...good, SigningCertURL: 'https://sns.us-east-1.amazonaws.com.evil.example/cert.pem' },
      { ...good, SigningCertURL: 'http://sns.us-east-1.amazonaws.com/cert.pem' },
      { ...good, SignatureVersion: '3' },
    ]
    for (const m of cases) {
      const res = await post(m)
      expect(res.status).toBe(403)
      expect((await res.json()).errors[0].error).toBe('AuthError')
    }
    expect(await receipts()).toEqual([])
  })

  it('only trusts SNS hosts of amazonaws.com unless configured for the sandbox', () => {
    const v = new SnsVerifier()
    expect(v.trusted('https://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem')).toBe(true)
    expect(v.trusted('https://sns.cn-north-1.amazonaws.com.cn/x.pem')).toBe(true)
    expect(v.trusted(`${certOrigin}/cert.pem`)).toBe(false)
    expect(v.trusted('https://evil.example/sns.us-east-1.amazonaws.com/x.pem')).toBe(false)
    expect(v.trusted('https://sns.us-east-1.amazonaws.com:8443/x.pem')).toBe(false)
  })

  it('confirms a verified subscription by its SubscribeURL, and records complaints apart', async () => {
    const sub = signed({ Type: 'SubscriptionConfirmation', Message: 'You have chosen to subscribe', Token: 'tok', SubscribeURL: `${certOrigin}/subscribe?t=1` })
    expect((await post(sub)).status).toBe(200)
    expect(subscribed).toBe(1)
    const complaint = signed({ Type: 'Notification', Message: JSON.stringify({ notificationType: 'Complaint', mail: { messageId: 'ses-9' },
      complaint: { complaintFeedbackType: 'abuse', feedbackId: 'f1' } }) })
    expect((await post(complaint)).status).toBe(200)
    expect(await w.t.db.query('SELECT provider, provider_ref, complaint_type FROM email_complaints')).toEqual([{ provider: 'ses', provider_ref: 'ses-9', complaint_type: 'abuse' }])
    expect(await receipts()).toEqual([])
  })
})

describe('the SES v2 provider (AWS SDK, endpoint on loopback)', () => {
  it('sends SendEmail with both bodies and the headers, keeps the MessageId, and maps SES errors to kinds', async () => {
    const seen: { path: string; auth: string; body: any }[] = []
    let answer = { status: 200, body: { MessageId: 'ses-message-1' } as object, type: '' }
    const stand = createServer((req, res) => {
      let data = ''
      req.on('data', (c) => { data += c })
      req.on('end', () => {
        seen.push({ path: req.url ?? '', auth: String(req.headers.authorization ?? ''), body: JSON.parse(data) })
        res.writeHead(answer.status, { 'content-type': 'application/json', ...(answer.type ? { 'x-amzn-errortype': answer.type } : {}) }).end(JSON.stringify(answer.body))
      })
    })
    await new Promise<void>((ok) => stand.listen(0, '127.0.0.1', ok))
    const ses = new SesEmail({ region: 'us-east-1', endpoint: `http://127.0.0.1:${(stand.address() as AddressInfo).port}`, timeoutMs: 5000,
      credentials: { accessKeyId: 'AKIDSANDBOX', secretAccessKey: 'sandbox' } })
    const email = { id: randomUUID(), to: 'a@example.com', from: 'n@herald.example', replyTo: 'help@agency.example', subject: 'Hi', html: '<p>Hi</p>', text: 'Hi',
      unsubscribeUrl: 'https://agency.example/u?t=1' }
    try {
      expect(await ses.send(email)).toBe('ses-message-1')
      expect(seen[0].path).toBe('/v2/email/outbound-emails')
      expect(seen[0].auth).toMatch(/^AWS4-HMAC-SHA256 Credential=AKIDSANDBOX\/\d{8}\/us-east-1\/ses\/aws4_request/)
      expect(seen[0].body).toMatchObject({ FromEmailAddress: 'n@herald.example', Destination: { ToAddresses: ['a@example.com'] }, ReplyToAddresses: ['help@agency.example'],
        Content: { Simple: { Subject: { Data: 'Hi' }, Body: { Html: { Data: '<p>Hi</p>' }, Text: { Data: 'Hi' } } } } })
      expect(seen[0].body.Content.Simple.Headers).toEqual(expect.arrayContaining([{ Name: 'List-Unsubscribe', Value: '<https://agency.example/u?t=1>' },
        { Name: 'List-Unsubscribe-Post', Value: 'List-Unsubscribe=One-Click' }, { Name: 'X-Herald-Notification-Id', Value: email.id }]))
      answer = { status: 429, body: { message: 'Maximum sending rate exceeded.' }, type: 'TooManyRequestsException' }
      await expect(ses.send(email)).rejects.toMatchObject({ kind: 'retry' })
      answer = { status: 400, body: { message: 'Email address is not verified.' }, type: 'MessageRejected' }
      const err = await ses.send(email).catch((e) => e)
      expect(err).toBeInstanceOf(ProviderError)
      expect(err.kind).toBe('recipient')
    } finally {
      await ses.close()
      await new Promise<void>((ok) => stand.close(() => ok()))
    }
  })
})
