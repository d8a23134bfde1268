/**
 * Email: created emails are claimed through the work queue (emailQueue), rendered (template version
 * + personalisation, unsealed only here) to a subject, HTML and plain text, and handed to the one
 * email provider (SMTP or SES). As for texts (send/engine.ts), a round moves to `sending` just
 * before its calls, in the statement that checks this worker still holds each row's claim
 * (queue.hold), and only the rows it returns are handed over: a crash may leave an email sent or
 * not, never sent twice. Outcomes:
 *   sending             handed over: the provider's reference kept; delivered / bounced later by receipts (SNS)
 *   permanent-failure   the provider refused the address (or a test key's perm-fail@ address)
 *   validation-failed   the address or the personalisation no longer passes (a template changed underneath)
 *   retrying            the provider surely took nothing: back to `created` after the queue's backoff
 *   technical-failure   out of attempts, unreadable, or not sent within 72 hours (queue.fail)
 * Test keys never reach a provider: temp-fail@… fails for now, perm-fail@… for good, any other is
 * delivered (GOV.UK Notify's simulated addresses).
 */
import type { Engine } from '../../engine/engine.ts'
import { claim, fail, finish, heartbeat, hold, release } from '../../engine/queue.ts'
import type { Db } from '../../db/types.ts'
import type { Logger } from '../../log.ts'
import type { Sealer } from '../../privacy/seal.ts'
import { checkEmail } from './address.ts'
import { renderEmail } from './format.ts'
import { ProviderError, type EmailProvider } from './provider.ts'
import { emailQueue } from './queue.ts'

const TIMEOUT_HOURS = 72

export function simulatedEmailStatus(address: string): 'delivered' | 'permanent-failure' | 'temporary-failure' {
  const local = address.toLowerCase().split('@')[0]
  return local === 'perm-fail' ? 'permanent-failure' : local === 'temp-fail' ? 'temporary-failure' : 'delivered'
}

interface Outcome { id: string; status?: string; provider?: string; ref?: string; sent?: boolean; done?: boolean; retry?: string; permanent?: boolean }

export function emailEngine(opts: { provider: EmailProvider; sealer: Sealer; from: string; concurrency: number; log: Logger; workerId: string }): Engine {
  const { provider, sealer, log, workerId } = opts
  const spec = emailQueue

  async function one(r: Record<string, any>): Promise<Outcome> {
    if (Date.now() - Date.parse(r.created_at) > TIMEOUT_HOURS * 3600_000) return { id: r.id, retry: `not sent within ${TIMEOUT_HOURS} hours`, permanent: true }
    const address = checkEmail(sealer.open(Buffer.from(r.recipient_ct)))
    const personalisation = r.personalisation_ct ? JSON.parse(sealer.open(Buffer.from(r.personalisation_ct))) : {}
    const email = renderEmail(r.template_subject ?? '', r.template_body, personalisation)
    if (!address.ok || email.missing.length) return { id: r.id, status: 'validation-failed', done: true }
    if (r.key_type === 'test') return { id: r.id, status: simulatedEmailStatus(address.address), sent: true, done: true }
    try {
      const ref = await provider.send({
        id: r.id, to: address.address, from: opts.from, replyTo: r.reply_to, subject: email.subject, html: email.html, text: email.text,
        unsubscribeUrl: r.unsubscribe_ct ? sealer.open(Buffer.from(r.unsubscribe_ct)) : null,
      })
      return { id: r.id, provider: provider.name, ref, sent: true }
    } catch (err) {
      const e = err instanceof ProviderError ? err : new ProviderError(String(err), 'unknown')
      if (e.kind === 'recipient') return { id: r.id, status: 'permanent-failure', provider: provider.name, done: true }
      // Maybe taken: it waits for a receipt (or the 72-hour sweep) rather than risk a second copy.
      if (e.kind === 'unknown') return { id: r.id, provider: provider.name, sent: true }
      // An SMTP answer may quote the address it refused: it is never logged nor kept.
      const message = e.message.replace(/[^\s<>"'(),;:]+@[^\s<>"'(),;:]+/g, '<address>')
      log.warn({ provider: provider.name, err: message }, 'email provider failed; the email waits to be tried again')
      return { id: r.id, retry: message }
    }
  }

  return {
    name: 'email',
    batchSize: opts.concurrency,
    async step(db, signal) {
      if (signal.aborted) return {}
      const claimed = await claim(db, spec, workerId, opts.concurrency, {
        returning: `t.key_type, t.recipient_ct, t.personalisation_ct, t.created_at, t.reply_to, t.unsubscribe_ct,
          (SELECT body FROM template_versions v WHERE v.template_id = t.template_id AND v.version = t.template_version) AS template_body,
          (SELECT subject FROM template_versions v WHERE v.template_id = t.template_id AND v.version = t.template_version) AS template_subject` })
      if (claimed.length === 0) return {}
      const counts: Record<string, number> = {}
      // The claims stay live while the provider takes its time, so the outcomes can be recorded on them.
      const ids = claimed.map((r) => r.id)
      const renew = setInterval(() => void heartbeat(db, spec, workerId, ids).catch(() => {}), (spec.leaseSeconds * 1000) / 3)
      try {
        if (signal.aborted) {
          counts.released = await release(db, spec, workerId, ids)
          return counts
        }
        // The effect gate (see the header): only rows still this worker's, now `sending`, are handed over.
        const mine = await hold(db, spec, workerId, ids, `status = 'sending', updated_at = now()`)
        if (mine.size < claimed.length) log.warn({ lost: claimed.length - mine.size }, 'email lost the claim of some emails; another worker has them')
        const outcomes = await Promise.all(claimed.filter((r) => mine.has(r.id)).map((r) => one(r).catch((err): Outcome =>
          ({ id: r.id, retry: `could not be prepared: ${(err as Error).name}`, permanent: true }))))
        await record(db, workerId, outcomes)
        for (const o of outcomes) {
          const k = o.retry ? (o.permanent ? 'technical-failure' : 'retrying') : o.status ?? 'sending'
          counts[k] = (counts[k] ?? 0) + 1
        }
      } finally {
        clearInterval(renew)
      }
      log.info(counts, 'emails handed to the provider')
      return counts
    },
  }
}

/** A round's outcomes in one transaction, only on rows this worker holds (queue.finish / queue.fail). */
async function record(db: Db, workerId: string, outcomes: Outcome[]) {
  const done = outcomes.filter((o) => !o.retry)
  const retries = outcomes.filter((o) => o.retry)
  await db.transaction(async (tx) => {
    await finish(tx, emailQueue, workerId, done.map((o) => ({ id: o.id, status: o.status ?? null, provider: o.provider ?? null, ref: o.ref ?? null,
      sent: o.sent ?? false, done: o.done ?? false })), {
      columns: 'status text, provider text, ref text, sent boolean, done boolean',
      set: `status = coalesce(v.status, t.status), provider = coalesce(t.provider, v.provider), provider_ref = coalesce(t.provider_ref, v.ref),
        sent_at = CASE WHEN v.sent THEN now() ELSE t.sent_at END, completed_at = CASE WHEN v.done THEN now() ELSE t.completed_at END, updated_at = now()`,
    })
    if (retries.length === 0) return
    await tx.query(`UPDATE notifications SET status = 'created', updated_at = now() WHERE id = ANY($1::uuid[]) AND claimed_by = $2`,
      [retries.map((o) => o.id), workerId])
    await fail(tx, emailQueue, workerId, retries.map((o) => ({ id: o.id, error: o.retry!, permanent: o.permanent })))
  })
}
