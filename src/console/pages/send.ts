/**
 * Send one text, as GOV.UK Notify's "send one-off": a phone number and each placeholder of the
 * template. It goes through submitSms, the function POST /v2/notifications/sms calls, as a live
 * text without a key (Notify's one-off): the daily limit, trial mode, the numbers refused and the
 * messages are the API's. Needs send_messages.
 */
import { Admitter } from '../../messaging/api/admit.ts'
import { Directory } from '../../messaging/api/directory.ts'
import { ApiError } from '../../messaging/api/errors.ts'
import { submitSms } from '../../messaging/api/submit.ts'
import { placeholders } from '../../messaging/templates.ts'
import { httpError, type Pages } from '../app.ts'
import type { User } from '../users.ts'
import { field, serviceFor, type Form } from './services.ts'
import { previewOf, templateFor } from './templates.ts'

type P = { Params: { sid: string; tid: string }; Body: Form }

/** The API's message as the form shows it: the field it is about, and words for a person. */
function formError(err: ApiError, names: string[]): { error: string; errorField?: string } {
  const m = err.messages[0]
  if (m.startsWith('phone_number ')) return { error: `Phone number: ${m.slice('phone_number '.length)}`, errorField: 'phone_number' }
  const missing = /^Missing personalisation: (.*)$/.exec(m)
  if (missing) return { error: `Enter ${missing[1]}`, errorField: `p${names.indexOf(missing[1].split(', ')[0])}` }
  return { error: m }
}

export const sendPages: Pages = (scope, { db, render, sealer, config }) => {
  const dir = new Directory(db, 0)
  const admitter = new Admitter(db)
  const deps = { dir, sealer, region: config.exposure.defaultRegion }

  const page = async (sid: string, tid: string, user: User) => {
    const service = await serviceFor(db, user, sid, 'send_messages')
    const template = await templateFor(dir, service, tid)
    if (template.archived) throw httpError(404, 'This template has been deleted')
    return { service, template, names: placeholders(template.body), preview: await previewOf(db, template.body) }
  }

  scope.get<P>('/services/:sid/send/:tid', async (req, reply) => {
    const p = await page(req.params.sid, req.params.tid, req.user!)
    return render(reply, 'template-send', { ...p, form: {} })
  })

  scope.post<P>('/services/:sid/send/:tid', async (req, reply) => {
    const p = await page(req.params.sid, req.params.tid, req.user!)
    const form: Record<string, string> = { phone_number: field(req.body, 'phone_number').trim() }
    p.names.forEach((_, i) => (form[`p${i}`] = field(req.body, `p${i}`)))
    const again = (status: number, e: { error: string; errorField?: string }) => render(reply.code(status), 'template-send', { ...p, form, ...e })
    if (!form.phone_number) return again(400, { error: 'Enter a phone number', errorField: 'phone_number' })
    const empty = p.names.findIndex((_, i) => !form[`p${i}`].trim())
    if (empty >= 0) return again(400, { error: `Enter ${p.names[empty]}`, errorField: `p${empty}` })
    try {
      const by = { service: p.service, keyType: 'normal' as const, apiKeyId: null, request: false }
      const personalisation = Object.fromEntries(p.names.map((n, i) => [n, form[`p${i}`]]))
      const sent = await submitSms(deps, admitter, by, { phone_number: form.phone_number, template_id: p.template.id, personalisation })
      return reply.redirect(`/services/${p.service.id}/activity?sent=${sent.id}`)
    } catch (err) {
      if (!(err instanceof ApiError)) throw err
      return again(err.status, formError(err, p.names))
    }
  })
}
