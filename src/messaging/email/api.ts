/**
 * POST /v2/notifications/email, as GOV.UK Notify's: the schema's messages, then submitEmail; the
 * 201 body names the subject, the body and the From the email is sent with.
 */
import type { FastifyInstance, FastifyRequest } from 'fastify'
import type { Db } from '../../db/types.ts'
import type { Sealer } from '../../privacy/seal.ts'
import type { Admitter } from '../api/admit.ts'
import type { Caller } from '../api/auth.ts'
import type { Directory } from '../api/directory.ts'
import { shown, validation } from '../api/errors.ts'
import { submitEmail, type EmailRequest } from './submit.ts'

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i
const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v)
const FIELDS = ['email_address', 'template_id', 'personalisation', 'reference', 'email_reply_to_id', 'one_click_unsubscribe_url', 'scheduled_for']

/** Notify's schema messages for POST /v2/notifications/email (post_email_request). */
export function checkEmailRequest(body: unknown, scheduleProblem: (at: string) => string | undefined): string[] {
  const b = isObject(body) ? body : {}
  const errors: string[] = []
  for (const k of ['email_address', 'template_id']) if (b[k] === undefined || b[k] === null) errors.push(`${k} is a required property`)
  const extra = Object.keys(b).filter((k) => !FIELDS.includes(k))
  if (extra.length) errors.push(`Additional properties are not allowed (${extra.join(', ')} was unexpected)`)
  for (const k of ['template_id', 'email_reply_to_id']) {
    if (b[k] !== undefined && b[k] !== null && (typeof b[k] !== 'string' || !UUID.test(b[k] as string))) errors.push(`${k} is not a valid UUID`)
  }
  if (b.personalisation !== undefined && b.personalisation !== null && !isObject(b.personalisation)) errors.push(`personalisation ${shown(b.personalisation)} is not of type object`)
  if (b.reference !== undefined && b.reference !== null && typeof b.reference !== 'string') errors.push(`reference ${shown(b.reference)} is not of type string`)
  else if (typeof b.reference === 'string' && b.reference.length > 1000) errors.push(`reference ${shown(b.reference)} is too long`)
  if (b.email_address !== undefined && b.email_address !== null && typeof b.email_address !== 'string') errors.push(`email_address ${shown(b.email_address)} is not of type string`)
  const u = b.one_click_unsubscribe_url
  if (u !== undefined && u !== null) {
    if (typeof u !== 'string') errors.push(`one_click_unsubscribe_url ${shown(u)} is not of type string`)
    else if (!/^https:\/\/[^\s/]+\.[^\s]+$/i.test(u) || u.length > 2048) errors.push(`one_click_unsubscribe_url ${shown(u)} is not a valid https url`)
  }
  if (b.scheduled_for !== undefined && b.scheduled_for !== null) {
    const problem = typeof b.scheduled_for === 'string' ? scheduleProblem(b.scheduled_for) : `${shown(b.scheduled_for)} is not of type string, null`
    if (problem) errors.push(`scheduled_for ${problem}`)
  }
  return errors
}

export function emailRoutes(deps: { db: Db; dir: Directory; sealer: Sealer; emailFrom: string }, admitter: Admitter, caller: (req: FastifyRequest) => Promise<Caller>,
  dates: { parse: (s: string) => Date | undefined; problem: (s: string) => string | undefined }) {
  return (app: FastifyInstance) => {
    app.post('/v2/notifications/email', async (req, reply) => {
      const { service, key } = await caller(req)
      const errors = checkEmailRequest(req.body, dates.problem)
      if (errors.length) throw validation(errors)
      const b = req.body as EmailRequest & { scheduled_for?: string }
      const by = { service, keyType: key.keyType, apiKeyId: key.id, request: true }
      const { id, template, email } = await submitEmail(deps, admitter, by, b, b.scheduled_for ? dates.parse(b.scheduled_for) ?? null : null)
      const base = `${req.protocol}://${req.headers.host ?? 'localhost'}`
      return reply.code(201).send({
        id, reference: b.reference ?? null, uri: `${base}/v2/notifications/${id}`,
        template: { id: template.id, version: template.version, uri: `${base}/services/${service.id}/templates/${template.id}` },
        scheduled_for: b.scheduled_for ?? null,
        content: { subject: email.subject, body: email.body, from_email: deps.emailFrom, one_click_unsubscribe_url: b.one_click_unsubscribe_url ?? null },
      })
    })
  }
}
