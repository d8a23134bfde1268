/**
 * Email: templates rendered as GOV.UK Notify formats them, POST /v2/notifications/email, and the
 * official client's sendEmail through the email engine, the SMTP provider and the email sandbox
 * (SMTP), whose SES-style SNS notifications come back signed to /receipts/ses: delivered, bounced,
 * complained. Facts, retention and reports carry the emails.
 */
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import type { FastifyInstance } from 'fastify'
import { Writable } from 'node:stream'
import notifyClient from 'notifications-node-client'
import { startHttpServer } from '../../src/http/server.ts'
import { createLogger } from '../../src/log.ts'
import { emailEngine } from '../../src/messaging/email/engine.ts'
import { renderEmail } from '../../src/messaging/email/format.ts'
import { addReplyTo } from '../../src/messaging/email/replyto.ts'
import { SmtpEmail } from '../../src/messaging/email/smtp.ts'
import { complaintsOf, sesReceiptRoutes, SnsVerifier } from '../../src/messaging/email/sns.ts'
import { computeDay } from '../../src/messaging/facts/facts.ts'
import { receiptsEngine } from '../../src/messaging/receipts/engine.ts'
import { reportCsv } from '../../src/messaging/reports/report.ts'
import { runRetention } from '../../src/messaging/retention/retention.ts'
import { createTemplate } from '../../src/messaging/services.ts'
import { startEmailSandbox, SANDBOX_TOPIC, type EmailSandbox } from '../../src/sandbox/email/server.ts'
import { callApi, messagingWorld, sealer } from '../helpers/messaging.ts'
import { loadConfig } from '../../src/config.ts'
import { startEmail } from '../../src/messaging/email/index.ts'

const { NotifyClient } = notifyClient as { NotifyClient: new (base: string, key: string) => any }
const w = messagingWorld()
let captured = ''
const log = createLogger('debug', new Writable({ write(chunk, _e, done) { captured += chunk; done() } }))
let receiptsApp: FastifyInstance
let sandbox: EmailSandbox
let smtp: SmtpEmail
let template: { id: string }

const SUBJECT = 'Your result, ((name))'
const BODY = `# Your test result

Hello ((name)),

Your result is ready:

* sign in at https://results.example.gov
* or call us

---

^ Keep this email.

Read [the guidance](https://example.gov/guide).`

beforeAll(async () => {
  receiptsApp = await startHttpServer('127.0.0.1', 0, [])
  const a = receiptsApp.server.address()
  const port = typeof a === 'object' && a ? a.port : 0
  await receiptsApp.close()
  sandbox = await startEmailSandbox({ notifyUrl: `http://127.0.0.1:${port}/receipts/ses` })
  receiptsApp = await startHttpServer('127.0.0.1', port, [sesReceiptRoutes({ db: w.t.db, log, verifier: new SnsVerifier({ extraOrigin: sandbox.url }),
    topics: [SANDBOX_TOPIC], provider: 'smtp' })])
  smtp = new SmtpEmail({ url: sandbox.smtpUrl, timeoutMs: 5000 })
})
afterAll(async () => {
  await smtp?.close()
  await sandbox?.close()
  await receiptsApp?.close()
})
beforeEach(async () => {
  sandbox.ledger.length = 0
  template = await createTemplate(w.t.db, w.service.id, 'Result email', BODY, 'tester', { type: 'email', subject: SUBJECT })
})

const engine = () => emailEngine({ provider: smtp, sealer, from: 'results@herald.example', concurrency: 8, log, workerId: 'test' })
const signal = () => new AbortController().signal

/** Sends one email with the official client; runs the email engine, waits for the sandbox's SNS posts, applies them. */
async function sendThrough(address: string, key = w.keys.normal) {
  const client = new NotifyClient(w.url, key)
  const id = (await client.sendEmail(template.id, address, { personalisation: { name: 'Ada' }, reference: 'ref-1' })).data.id as string
  expect(await engine().step(w.t.db, signal())).toEqual({ sending: 1 })
  const entry = await waitFor(() => sandbox.ledger.find((e) => e.headers['x-herald-notification-id'] === id && e.posted.length > 0))
  await waitFor(async () => (await w.t.db.query('SELECT count(*)::int AS n FROM sms_receipts')).at(0)!.n + (await w.t.db.query('SELECT count(*)::int AS n FROM email_complaints')).at(0)!.n > 0)
  await receiptsEngine(log).step(w.t.db, signal())
  return { id, entry, client }
}

async function waitFor<T>(f: () => T | Promise<T>, ms = 5000): Promise<NonNullable<T>> {
  const until = Date.now() + ms
  for (;;) {
    const v = await f()
    if (v) return v as NonNullable<T>
    if (Date.now() > until) throw new Error('timed out')
    await new Promise((r) => setTimeout(r, 20))
  }
}

describe('email templates', () => {
  it('renders Notify formatting to HTML and plain text, with placeholders in subject and body', () => {
    const e = renderEmail(SUBJECT, BODY, { name: 'Ada' })
    expect(e.subject).toBe('Your result, Ada')
    expect(e.html).toContain('>Your test result</h2>')
    expect(e.html).toMatch(/<ul[^>]*><li[^>]*>sign in at <a href="https:\/\/results\.example\.gov"[^>]*>https:\/\/results\.example\.gov<\/a><\/li><li[^>]*>or call us<\/li><\/ul>/)
    expect(e.html).toContain('<hr')
    expect(e.html).toMatch(/<blockquote[^>]*><p[^>]*>Keep this email\.<\/p><\/blockquote>/)
    expect(e.html).toContain('<a href="https://example.gov/guide" style="color:#1d70b8">the guidance</a>')
    expect(e.text).toContain('Your test result\n----------------')
    expect(e.text).toContain('• sign in at https://results.example.gov\n• or call us')
    expect(e.text).toContain('Read the guidance (https://example.gov/guide).')
  })

  it('never lets personalisation inject HTML, nor a javascript: link', () => {
    const e = renderEmail('Hi ((name))', 'Dear ((name)), [click](((link)))', { name: '<script>alert(1)</script>"', link: 'javascript:alert(1)' })
    expect(e.html).not.toContain('<script>')
    expect(e.html).toContain('&lt;script&gt;alert(1)&lt;/script&gt;&quot;')
    expect(e.html).not.toContain('href="javascript')
    expect(e.subject).toBe('Hi <script>alert(1)</script>"')
    expect(renderEmail('Hi ((name))', 'Body ((other))', {}).missing).toEqual(['name', 'other'])
  })
})

describe('POST /v2/notifications/email', () => {
  it('creates an email as Notify answers, with the reply-to and unsubscribe URL; GET shows it', async () => {
    const replyTo = await addReplyTo(w.t.db, w.service.id, 'help@agency.example')
    const res = await callApi(w, 'POST', '/v2/notifications/email', {
      email_address: 'Ada@Example.com', template_id: template.id, personalisation: { name: 'Ada' }, reference: 'r1',
      email_reply_to_id: replyTo.id, one_click_unsubscribe_url: 'https://agency.example/unsubscribe?t=abc',
    })
    expect(res.status).toBe(201)
    const body = await res.json()
    expect(body).toMatchObject({ reference: 'r1', scheduled_for: null, template: { id: template.id, version: 1 },
      content: { subject: 'Your result, Ada', from_email: 'notify@herald.localhost', one_click_unsubscribe_url: 'https://agency.example/unsubscribe?t=abc' } })
    expect(body.content.body).toContain('Hello Ada,')
    const [row] = await w.t.db.query('SELECT * FROM notifications WHERE id = $1', [body.id])
    expect(row).toMatchObject({ notification_type: 'email', reply_to: 'help@agency.example', status: 'created' })
    // Sealed and keyed-hashed, never in plain text.
    expect(Buffer.from(row.recipient_ct).toString('latin1')).not.toContain('Example.com')
    expect(Buffer.from(row.recipient_hash)).toEqual(sealer.hash('ada@example.com'))
    const got = await (await callApi(w, 'GET', `/v2/notifications/${body.id}`)).json()
    expect(got).toMatchObject({ type: 'email', email_address: 'Ada@Example.com', phone_number: null, subject: 'Your result, Ada',
      one_click_unsubscribe_url: 'https://agency.example/unsubscribe?t=abc' })
  })

  it('refuses bad input in Notify’s format, naming the field', async () => {
    const bad = async (b: object) => (await callApi(w, 'POST', '/v2/notifications/email', b)).json()
    expect((await bad({ template_id: template.id })).errors).toEqual([{ error: 'ValidationError', message: 'email_address is a required property' }])
    expect((await bad({ email_address: 'not-an-address', template_id: template.id, personalisation: { name: 'A' } })).errors)
      .toEqual([{ error: 'ValidationError', message: 'email_address Not a valid email address' }])
    expect((await bad({ email_address: 'a@b.com', template_id: template.id })).errors).toEqual([{ error: 'BadRequestError', message: 'Missing personalisation: name' }])
    expect((await bad({ email_address: 'a@b.com', template_id: w.template.id })).errors)
      .toEqual([{ error: 'BadRequestError', message: 'sms template is not suitable for email notification' }])
    expect((await bad({ email_address: 'a@b.com', template_id: template.id, personalisation: { name: 'A' }, email_reply_to_id: '00000000-0000-4000-8000-000000000000' })).errors[0].message)
      .toBe(`email_reply_to_id 00000000-0000-4000-8000-000000000000 does not exist in database for service id ${w.service.id}`)
    expect((await bad({ email_address: 'a@b.com', template_id: template.id, one_click_unsubscribe_url: 'http://x.example' })).errors[0].message)
      .toContain('one_click_unsubscribe_url')
    const sms = await (await callApi(w, 'POST', '/v2/notifications/sms', { phone_number: '+12025550123', template_id: template.id, personalisation: { name: 'A' } })).json()
    expect(sms.errors).toEqual([{ error: 'BadRequestError', message: 'email template is not suitable for sms notification' }])
  })

  it('serves email templates to the official client: getTemplateById, previewTemplateById', async () => {
    const client = new NotifyClient(w.url, w.keys.normal)
    const t = (await client.getTemplateById(template.id)).data
    expect(t).toMatchObject({ id: template.id, type: 'email', subject: SUBJECT, body: BODY, personalisation: { name: { required: true } } })
    const p = (await client.previewTemplateById(template.id, { name: 'Ada' })).data
    expect(p).toMatchObject({ id: template.id, type: 'email', version: 1, subject: 'Your result, Ada' })
    expect(p.html).toContain('<h2')
    const list = (await client.getAllTemplates('email')).data.templates
    expect(list.map((x: { id: string }) => x.id)).toEqual([template.id])
  })
})

describe('sending through the sandbox', () => {
  it('official client sendEmail → SMTP sandbox → delivered, getNotificationById shows it', async () => {
    await addReplyTo(w.t.db, w.service.id, 'help@agency.example')
    const { id, entry, client } = await sendThrough('resident@example.com')
    expect(entry).toMatchObject({ to: ['resident@example.com'], from: 'results@herald.example', subject: 'Your result, Ada', replyTo: 'help@agency.example' })
    expect(entry.html).toContain('<h2')
    expect(entry.text).toContain('• sign in at https://results.example.gov')
    expect(entry.posted).toEqual([200])
    const got = (await client.getNotificationById(id)).data
    expect(got).toMatchObject({ id, type: 'email', status: 'delivered', email_address: 'resident@example.com', subject: 'Your result, Ada', reference: 'ref-1' })
    expect(got.completed_at).not.toBeNull()
    // The address never reaches the log.
    expect(captured).not.toContain('resident@example.com')
  })

  it('a bounce address ends permanent-failure; a complaint is kept beside a delivered email', async () => {
    const bounced = await sendThrough('bounce@example.com')
    const [b] = await w.t.db.query('SELECT status, failure_code FROM notifications WHERE id = $1', [bounced.id])
    expect(b).toEqual({ status: 'permanent-failure', failure_code: 'smtp Permanent/General' })
    await w.t.db.exec('DELETE FROM sms_receipts')
    const complained = await sendThrough('complaint@example.com')
    await waitFor(() => complained.entry.posted.length === 2)
    await receiptsEngine(log).step(w.t.db, signal())
    const [c] = await w.t.db.query('SELECT status FROM notifications WHERE id = $1', [complained.id])
    expect(c.status).toBe('delivered')
    expect(await complaintsOf(w.t.db, w.service.id)).toMatchObject([{ notificationId: complained.id, type: 'abuse' }])
  })

  it('test keys never reach the provider: perm-fail@ fails, others are delivered', async () => {
    const client = new NotifyClient(w.url, w.keys.test)
    const ok = (await client.sendEmail(template.id, 'someone@example.com', { personalisation: { name: 'A' } })).data.id
    const bad = (await client.sendEmail(template.id, 'perm-fail@simulator.notify', { personalisation: { name: 'A' } })).data.id
    expect(await engine().step(w.t.db, signal())).toEqual({ delivered: 1, 'permanent-failure': 1 })
    expect(sandbox.ledger).toEqual([])
    const rows = await w.t.db.query('SELECT id, status FROM notifications ORDER BY id')
    expect(Object.fromEntries(rows.map((r) => [r.id, r.status]))).toEqual({ [ok]: 'delivered', [bad]: 'permanent-failure' })
  })
})

describe('facts, retention and reports', () => {
  it('count emails in the facts, move them to history, and show the address in reports', async () => {
    const { id } = await sendThrough('resident@example.com')
    const day = (await w.t.db.query(`SELECT (now() AT TIME ZONE $1)::date::text AS d`, [w.service.timezone]))[0].d
    await computeDay(w.t.db, w.service.id, day)
    expect(await w.t.db.query(`SELECT notification_type, status, notification_count::int AS n FROM ft_notification_status WHERE service_id = $1`, [w.service.id]))
      .toEqual([{ notification_type: 'email', status: 'delivered', n: 1 }])
    const [billing] = await w.t.db.query(`SELECT notification_type, notifications_sent::int AS n, rate::float AS rate FROM ft_billing WHERE service_id = $1`, [w.service.id])
    expect(billing).toEqual({ notification_type: 'email', n: 1, rate: 0 })
    let csv = ''
    for await (const chunk of reportCsv(w.t.db, sealer, { serviceId: w.service.id, from: day, to: day })) csv += chunk
    expect(csv.split('\n')[1]).toMatch(/^resident@example\.com,Result email,delivered,[^,]*,smtp,/)
    const later = new Date(Date.now() + 9 * 86400_000)
    const results = await runRetention(w.t.db, { store: { remove: async () => {} } as never, log, asOf: later })
    expect(results.find((r) => r.type === 'email')).toMatchObject({ archived: 1 })
    expect(await w.t.db.query('SELECT id FROM notifications')).toEqual([])
    expect(await w.t.db.query('SELECT id, notification_type FROM notification_history')).toEqual([{ id, notification_type: 'email' }])
  })
})

describe('configuration and herald start', () => {
  it('runs the sandbox when no provider is set (start only), and refuses an incomplete provider setting', async () => {
    expect(await startEmail(loadConfig({}), false, undefined, 2000)).toBeUndefined()
    const started = await startEmail(loadConfig({}), true, 'http://127.0.0.1:9', 2000)
    try {
      expect(started!.provider.name).toBe('smtp')
      expect(started!.sandbox).toMatch(/^email \(SMTP\) at smtp:\/\/127\.0\.0\.1:\d+ \(ledger: http:\/\/127\.0\.0\.1:\d+\/sandbox\/ledger\)$/)
    } finally {
      await started?.stop()
    }
    expect(() => loadConfig({ HERALD_EMAIL_PROVIDER: 'smtp', HERALD_EMAIL_FROM: 'a@b.gov' })).toThrow('HERALD_EMAIL_SMTP_URL')
    expect(() => loadConfig({ HERALD_EMAIL_PROVIDER: 'ses' })).toThrow('HERALD_EMAIL_FROM')
    expect(() => loadConfig({ HERALD_EMAIL_PROVIDER: 'sendgrid' })).toThrow('smtp and ses')
    expect(loadConfig({ HERALD_EMAIL_PROVIDER: 'ses', HERALD_EMAIL_FROM: 'a@b.gov', HERALD_EMAIL_SES_ENDPOINT: 'http://127.0.0.1:4566',
      HERALD_EMAIL_SNS_TOPICS: 'arn:aws:sns:us-east-1:1:a,arn:aws:sns:us-east-1:1:b' }).email)
      .toMatchObject({ provider: 'ses', sesEndpoint: 'http://127.0.0.1:4566', snsTopics: ['arn:aws:sns:us-east-1:1:a', 'arn:aws:sns:us-east-1:1:b'] })
  })
})
