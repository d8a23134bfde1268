/**
 * Email (GOV.UK Notify's email notifications). Inbox: notifications with notification_type 'email'
 * and status 'created', admitted by POST /v2/notifications/email (api.ts, submit.ts). Writes: the
 * email engine (engine.ts, queue emailQueue) hands each to the one configured provider (SMTP:
 * smtp.ts, or Amazon SES v2: ses.ts; provider.ts is their interface) and records `sending` with the
 * provider's reference; SES's deliveries, bounces and complaints arrive as verified SNS messages
 * (sns.ts) and become receipts that the receipts engine applies (delivered, permanent-failure,
 * temporary-failure) or complaints kept beside the email. Templates' formatting: format.ts.
 * Without a provider configured, `herald start` runs the email sandbox (src/sandbox/email/).
 */
import type { Config } from '../../config.ts'
import type { Db } from '../../db/types.ts'
import type { Routes } from '../../http/server.ts'
import type { Logger } from '../../log.ts'
import { SANDBOX_TOPIC, startEmailSandbox } from '../../sandbox/email/server.ts'
import type { EmailProvider } from './provider.ts'
import { SesEmail } from './ses.ts'
import { SmtpEmail } from './smtp.ts'
import { sesReceiptRoutes, SnsVerifier } from './sns.ts'

export interface EmailOutside {
  provider: EmailProvider
  /** The SNS receipt route, when Herald has a public address for it. */
  routes: (db: Db, log: Logger) => Routes
  sandbox?: string
  stop(): Promise<void>
}

/** The configured email provider, else (`herald start`) the sandbox's SMTP; undefined: email is off. */
export async function startEmail(config: Config, serve: boolean, publicUrl: string | undefined, timeoutMs: number): Promise<EmailOutside | undefined> {
  const e = config.email
  let smtpUrl = e.smtpUrl
  let certOrigin = e.snsCertOrigin
  let topics = e.snsTopics
  let sandboxLine: string | undefined
  let stopSandbox = async () => {}
  if (!e.provider) {
    if (!serve) return undefined
    const sandbox = await startEmailSandbox({ notifyUrl: publicUrl ? `${publicUrl}/receipts/ses` : undefined })
    smtpUrl = sandbox.smtpUrl
    certOrigin = sandbox.url
    topics = [SANDBOX_TOPIC]
    sandboxLine = `email (SMTP) at ${sandbox.smtpUrl} (ledger: ${sandbox.url}/sandbox/ledger)`
    stopSandbox = () => sandbox.close()
  }
  const provider: EmailProvider = e.provider === 'ses'
    ? new SesEmail({ region: e.sesRegion, endpoint: e.sesEndpoint, timeoutMs })
    : new SmtpEmail({ url: smtpUrl!, timeoutMs })
  const verifier = new SnsVerifier({ extraOrigin: certOrigin, timeoutMs })
  return {
    provider, sandbox: sandboxLine,
    routes: (db, log) => sesReceiptRoutes({ db, log, verifier, topics, provider: provider.name }),
    async stop() {
      await provider.close()
      await stopSandbox()
    },
  }
}
