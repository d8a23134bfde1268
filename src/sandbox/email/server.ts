/**
 * The email sandbox: an SMTP server (the `smtp-server` package) on loopback that answers as Amazon
 * SES's SMTP interface does ("250 Ok <message id>"), so Herald's real SMTP provider is what tests and
 * demos exercise. It mails no one: each message goes to the ledger (GET /sandbox/ledger on its small
 * HTTP side), and its fate by address (outcomes.ts) is posted to Herald as SES would through Amazon
 * SNS: a Notification signed with the sandbox's own RSA key (SignatureVersion 2), its SigningCertURL
 * on this HTTP side (/sandbox/sns-cert.pem, the public key in PEM). Herald takes that key only when
 * configured for the sandbox (HERALD_EMAIL_SNS_CERT_ORIGIN). Details: README.md.
 */
import { createServer, type Server } from 'node:http'
import { createSign, generateKeyPairSync, randomUUID } from 'node:crypto'
import type { AddressInfo } from 'node:net'
import { simpleParser } from 'mailparser'
import { SMTPServer } from 'smtp-server'
import { fateByAddress, sesEvents, type EmailFate } from './outcomes.ts'

export interface EmailSandboxOptions {
  /** SMTP port (0: any free one) and the HTTP side's. */
  smtpPort?: number
  httpPort?: number
  /** Where SES notifications go (Herald's POST /receipts/ses); absent: kept in the ledger only. */
  notifyUrl?: string
  /** The SNS topic the notifications come from. */
  topicArn?: string
}

export interface EmailLedgerEntry {
  id: string
  from: string
  to: string[]
  subject: string
  text: string
  html: string
  replyTo: string | null
  headers: Record<string, string>
  fate: EmailFate
  at: string
  /** The SNS deliveries of its events: HTTP status, or the error. */
  posted: (number | string)[]
}

export interface EmailSandbox {
  smtpUrl: string
  url: string
  topicArn: string
  ledger: EmailLedgerEntry[]
  close(): Promise<void>
}

export const SANDBOX_TOPIC = 'arn:aws:sns:us-east-1:000000000000:herald-sandbox-ses'

/** Fields SNS signs, in order (as Herald's verifier reads them). */
const SIGNED = ['Message', 'MessageId', 'Subject', 'Timestamp', 'TopicArn', 'Type']

export async function startEmailSandbox(opts: EmailSandboxOptions = {}): Promise<EmailSandbox> {
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 })
  const publicPem = publicKey.export({ type: 'spki', format: 'pem' }).toString()
  const ledger: EmailLedgerEntry[] = []
  const topicArn = opts.topicArn ?? SANDBOX_TOPIC
  const pending = new Set<Promise<void>>()

  const http: Server = createServer((req, res) => {
    if (req.method === 'GET' && req.url === '/sandbox/ledger') return void res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(ledger))
    if (req.method === 'GET' && req.url === '/sandbox/sns-cert.pem') return void res.writeHead(200, { 'content-type': 'application/x-pem-file' }).end(publicPem)
    res.writeHead(404).end()
  })
  await new Promise<void>((ok) => http.listen(opts.httpPort ?? 0, '127.0.0.1', ok))
  const url = `http://127.0.0.1:${(http.address() as AddressInfo).port}`

  const snsMessage = (event: object) => {
    const m: Record<string, string> = {
      Type: 'Notification', MessageId: randomUUID(), TopicArn: topicArn, Message: JSON.stringify(event), Timestamp: new Date().toISOString(),
      SignatureVersion: '2', SigningCertURL: `${url}/sandbox/sns-cert.pem`, UnsubscribeURL: `${url}/sandbox/unsubscribe`,
    }
    const text = SIGNED.filter((f) => m[f] !== undefined).map((f) => `${f}\n${m[f]}\n`).join('')
    m.Signature = createSign('RSA-SHA256').update(text, 'utf8').sign(privateKey, 'base64')
    return m
  }

  const post = async (entry: EmailLedgerEntry) => {
    const mail = { messageId: entry.id, source: entry.from, destination: entry.to, timestamp: entry.at }
    for (const event of sesEvents(entry.fate, mail, new Date().toISOString())) {
      if (!opts.notifyUrl) break
      try {
        const res = await fetch(opts.notifyUrl, { method: 'POST', headers: { 'content-type': 'text/plain; charset=UTF-8', 'x-amz-sns-message-type': 'Notification' },
          body: JSON.stringify(snsMessage(event)), signal: AbortSignal.timeout(5000) })
        entry.posted.push(res.status)
      } catch (err) {
        entry.posted.push((err as Error).name)
      }
    }
  }

  const smtp = new SMTPServer({
    authOptional: true, disabledCommands: ['STARTTLS'], banner: 'Herald email sandbox (SES-like)', size: 10 * 1024 * 1024, logger: false,
    onData(stream, session, callback) {
      simpleParser(stream).then((parsed) => {
        const id = `0100${Date.now().toString(16).padStart(12, '0')}-${randomUUID()}-000000`
        const to = session.envelope.rcptTo.map((r) => r.address)
        const headers: Record<string, string> = {}
        for (const name of ['message-id', 'x-herald-notification-id', 'list-unsubscribe', 'list-unsubscribe-post']) {
          const v = parsed.headers.get(name)
          if (v !== undefined) headers[name] = String(v)
        }
        const entry: EmailLedgerEntry = {
          id, from: session.envelope.mailFrom ? session.envelope.mailFrom.address : '', to, subject: parsed.subject ?? '', text: parsed.text ?? '',
          html: typeof parsed.html === 'string' ? parsed.html : '', replyTo: parsed.replyTo?.text ?? null, headers,
          fate: fateByAddress(to[0] ?? ''), at: new Date().toISOString(), posted: [],
        }
        ledger.push(entry)
        callback(null, `Ok ${id}`)
        // After the answer, as SES's notifications come after its 250.
        const p = new Promise<void>((ok) => setTimeout(ok, 10)).then(() => post(entry))
        pending.add(p)
        void p.finally(() => pending.delete(p))
      }, (err: Error) => callback(err))
    },
  })
  await new Promise<void>((ok, fail) => { smtp.once('error', fail); smtp.listen(opts.smtpPort ?? 0, '127.0.0.1', () => ok()) })
  const smtpPort = (smtp.server.address() as AddressInfo).port

  return {
    smtpUrl: `smtp://127.0.0.1:${smtpPort}`, url, topicArn, ledger,
    async close() {
      await Promise.allSettled([...pending])
      await new Promise<void>((ok) => smtp.close(() => ok()))
      await new Promise<void>((ok) => http.close(() => ok()))
    },
  }
}

