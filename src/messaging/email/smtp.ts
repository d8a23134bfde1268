/**
 * Email by SMTP (nodemailer): any relay, Amazon SES's SMTP interface included. The reference kept is
 * the one the relay gave in its final 250 reply when it gives one as SES does ("250 Ok <id>"), since
 * that is what SES's bounce and delivery notifications name; otherwise the Message-ID Herald set.
 * An SMTP error says how far the message got: refused at connection or with a 4xx, nothing was
 * taken (retry); a 5xx for the recipient, the address is refused (recipient); a failure while the
 * message itself was being sent or acknowledged may have delivered it (unknown).
 */
import nodemailer, { type Transporter } from 'nodemailer'
import { emailHeaders, ProviderError, type EmailProvider, type OutgoingEmail } from './provider.ts'

const SES_REPLY = /^250 Ok ([0-9a-f]{16}-[0-9a-f-]{20,})/i

export class SmtpEmail implements EmailProvider {
  readonly name = 'smtp'
  private readonly transport: Transporter

  constructor(opts: { url: string; timeoutMs: number }) {
    this.transport = nodemailer.createTransport(opts.url, {
      pool: true, maxConnections: 4, connectionTimeout: opts.timeoutMs, greetingTimeout: opts.timeoutMs, socketTimeout: opts.timeoutMs * 3,
    } as never)
  }

  async send(e: OutgoingEmail): Promise<string> {
    const domain = e.from.split('@').pop() || 'herald.localhost'
    const messageId = `<${e.id}@${domain}>`
    try {
      const info = await this.transport.sendMail({
        from: e.from, to: e.to, replyTo: e.replyTo ?? undefined, subject: e.subject, html: e.html, text: e.text, messageId, headers: emailHeaders(e),
      })
      return SES_REPLY.exec(String(info.response ?? ''))?.[1] ?? messageId.slice(1, -1)
    } catch (err) {
      throw smtpError(err as Error & { code?: string; command?: string; responseCode?: number })
    }
  }

  async close() {
    this.transport.close()
  }
}

function smtpError(err: Error & { code?: string; command?: string; responseCode?: number }): ProviderError {
  const what = `smtp: ${err.code ?? 'error'}${err.responseCode ? ` ${err.responseCode}` : ''} at ${err.command ?? 'connection'}`
  const code = err.responseCode ?? 0
  if (code >= 500 && (err.command === 'RCPT TO' || err.code === 'EENVELOPE')) return new ProviderError(what, 'recipient', code)
  // Before the message's final dot nothing was taken; a 4xx at any step is "not now".
  const before = err.command === undefined || err.command === 'CONN' || err.command === 'EHLO' || err.command === 'HELO' || err.command === 'AUTH PLAIN'
    || err.command === 'AUTH LOGIN' || err.command === 'MAIL FROM' || err.command === 'RCPT TO' || err.command === 'DATA' || err.code === 'ECONNECTION'
  if ((code >= 400 && code < 500) || (before && !(code >= 500))) return new ProviderError(what, 'retry', code)
  if (code >= 500) return new ProviderError(what, 'recipient', code)
  return new ProviderError(what, 'unknown', code)
}
