/**
 * Email by Amazon SES v2 (the AWS SDK's SendEmail, simple content with both bodies and headers). The
 * endpoint is configurable (HERALD_EMAIL_SES_ENDPOINT), credentials are the SDK's usual chain. The
 * reference kept is SES's MessageId, which its SNS notifications name. SES's errors as the kinds of
 * provider.ts: throttling, limits and 5xx are `retry` (SES took nothing); a rejected message (a bad
 * address) is `recipient`; a request whose answer never came is `unknown`.
 */
import { SESv2Client, SendEmailCommand } from '@aws-sdk/client-sesv2'
import { emailHeaders, ProviderError, type EmailProvider, type OutgoingEmail } from './provider.ts'

const RETRY = new Set(['ThrottlingException', 'TooManyRequestsException', 'LimitExceededException', 'SendingPausedException',
  'MailFromDomainNotVerifiedException', 'AccountSuspendedException', 'InternalServiceErrorException', 'ServiceUnavailable'])

export class SesEmail implements EmailProvider {
  readonly name = 'ses'
  private readonly client: SESv2Client

  constructor(opts: { region: string; endpoint?: string; timeoutMs: number; credentials?: { accessKeyId: string; secretAccessKey: string } }) {
    this.client = new SESv2Client({ region: opts.region, endpoint: opts.endpoint, credentials: opts.credentials, maxAttempts: 1,
      requestHandler: { requestTimeout: opts.timeoutMs, connectionTimeout: opts.timeoutMs } as never })
  }

  async send(e: OutgoingEmail): Promise<string> {
    try {
      const out = await this.client.send(new SendEmailCommand({
        FromEmailAddress: e.from, Destination: { ToAddresses: [e.to] }, ReplyToAddresses: e.replyTo ? [e.replyTo] : undefined,
        Content: { Simple: {
          Subject: { Data: e.subject, Charset: 'UTF-8' },
          Body: { Html: { Data: e.html, Charset: 'UTF-8' }, Text: { Data: e.text, Charset: 'UTF-8' } },
          Headers: Object.entries(emailHeaders(e)).map(([Name, Value]) => ({ Name, Value })),
        } },
      }))
      if (!out.MessageId) throw new ProviderError('ses: no MessageId in the answer', 'unknown')
      return out.MessageId
    } catch (err) {
      if (err instanceof ProviderError) throw err
      const e2 = err as Error & { $metadata?: { httpStatusCode?: number }; code?: string }
      const status = e2.$metadata?.httpStatusCode ?? 0
      const what = `ses: ${e2.name}${status ? ` ${status}` : ''}`
      if (RETRY.has(e2.name) || status === 429 || status >= 500) throw new ProviderError(what, 'retry', status)
      if (e2.name === 'MessageRejected' || e2.name === 'BadRequestException') throw new ProviderError(what, 'recipient', status)
      // No HTTP answer: refused connections never reached SES; anything else may have.
      if (!status && ['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN'].includes(e2.code ?? '')) throw new ProviderError(what, 'retry')
      throw new ProviderError(what, status ? 'retry' : 'unknown', status)
    }
  }

  async close() {
    this.client.destroy()
  }
}
