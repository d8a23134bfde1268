/**
 * A service's text message templates, as GOV.UK Notify's editor: the list, a new one, an edit (each
 * save a new version, the versions sent before kept), and the versions. The editor shows the text
 * with its ((placeholders)), how many fragments it is billed as and what one costs: on a "Preview"
 * submit without JavaScript, as you type with it (console.js asks POST …/templates/preview).
 * Any member sees templates; adding and editing them needs manage_templates.
 */
import type { Queryable } from '../../db/types.ts'
import { Directory } from '../../messaging/api/directory.ts'
import { smsRate } from '../../messaging/dashboard.ts'
import { createTemplate, templateVersions, updateTemplate, type Service, type Template } from '../../messaging/services.ts'
import { smsLength } from '../../messaging/sms.ts'
import { placeholders, render as fill } from '../../messaging/templates.ts'
import { httpError, type Pages } from '../app.ts'
import { canService } from '../users.ts'
import { field, serviceFor, UUID, type Form } from './services.ts'

/** Notify's limit on a text message template's content. */
const MAX_CHARS = 918

export interface Preview { text: string; placeholders: string[]; encoding: 'gsm' | 'ucs2'; units: number; fragments: number; rate: number; cost: string }

/** The text as a template shows it (placeholders as written), its fragments and their cost at today's rate. */
export async function previewOf(db: Queryable, body: string): Promise<Preview> {
  const names = placeholders(body)
  const { text } = fill(body, Object.fromEntries(names.map((n) => [n, `((${n}))`])))
  const length = smsLength(text)
  const rate = await smsRate(db)
  return { text, placeholders: names, ...length, rate, cost: `$${(length.fragments * rate).toFixed(4)}` }
}

/** A template of the service, or 404 (a template of another service is not there). */
export async function templateFor(dir: Directory, service: Service, tid: string): Promise<Template> {
  const t = UUID.test(tid) ? await dir.template(service.id, tid.toLowerCase()) : undefined
  if (!t) throw httpError(404, 'There is no such template in this service')
  return t
}

function problem(name: string, body: string): { error: string; errorField: string } | undefined {
  if (!name) return { error: 'Enter a template name', errorField: 'name' }
  if (name.length > 255) return { error: 'Template name must be 255 characters or fewer', errorField: 'name' }
  if (!body.trim()) return { error: 'Enter the message', errorField: 'body' }
  if ([...body].length > MAX_CHARS) return { error: `Message must be ${MAX_CHARS} characters or fewer (it is ${[...body].length})`, errorField: 'body' }
  return undefined
}

type P = { Params: { sid: string; tid: string }; Body: Form }

export const templatePages: Pages = (scope, { db, render }) => {
  const dir = new Directory(db, 0) // the console reads what is there now: no cache

  scope.get<P>('/services/:sid/templates', async (req, reply) => {
    const service = await serviceFor(db, req.user!, req.params.sid)
    return render(reply, 'template-list', { service, templates: await dir.templatesOf(service.id), canEdit: canService(req.user!, service.id, 'manage_templates') })
  })

  scope.get<P>('/services/:sid/templates/new', async (req, reply) => {
    const service = await serviceFor(db, req.user!, req.params.sid, 'manage_templates')
    return render(reply, 'template-edit', { service, template: null, form: { name: '', body: '' }, canEdit: true })
  })

  scope.post<P>('/services/:sid/templates/new', async (req, reply) => {
    const service = await serviceFor(db, req.user!, req.params.sid, 'manage_templates')
    const form = { name: field(req.body, 'name').trim(), body: field(req.body, 'body') }
    const page = { service, template: null, form, canEdit: true, preview: form.body ? await previewOf(db, form.body) : undefined }
    if (field(req.body, 'action') === 'preview') return render(reply, 'template-edit', page)
    const bad = problem(form.name, form.body)
    if (bad) return render(reply.code(400), 'template-edit', { ...page, ...bad })
    const t = await createTemplate(db, service.id, form.name, form.body, req.user!.email)
    return reply.redirect(`/services/${service.id}/templates/${t.id}?saved=1`)
  })

  scope.post<P>('/services/:sid/templates/preview', async (req, reply) => {
    await serviceFor(db, req.user!, req.params.sid)
    return reply.header('cache-control', 'no-store').send(await previewOf(db, field(req.body, 'body')))
  })

  scope.get<P & { Querystring: { saved?: string } }>('/services/:sid/templates/:tid', async (req, reply) => {
    const service = await serviceFor(db, req.user!, req.params.sid)
    const template = await templateFor(dir, service, req.params.tid)
    return render(reply, 'template-edit', {
      service, template, form: { name: template.name, body: template.body }, preview: await previewOf(db, template.body), saved: req.query.saved === '1',
      canEdit: canService(req.user!, service.id, 'manage_templates') && !template.archived, canSend: canService(req.user!, service.id, 'send_messages'),
    })
  })

  scope.post<P>('/services/:sid/templates/:tid', async (req, reply) => {
    const service = await serviceFor(db, req.user!, req.params.sid, 'manage_templates')
    const template = await templateFor(dir, service, req.params.tid)
    if (template.archived) throw httpError(400, 'This template has been deleted: it cannot be changed')
    const form = { name: field(req.body, 'name').trim(), body: field(req.body, 'body') }
    const page = { service, template, form, canEdit: true, preview: await previewOf(db, form.body) }
    if (field(req.body, 'action') === 'preview') return render(reply, 'template-edit', page)
    const bad = problem(form.name, form.body)
    if (bad) return render(reply.code(400), 'template-edit', { ...page, ...bad })
    // Saving what is already there makes no version (Notify's editor does the same).
    if (form.name !== template.name || form.body !== template.body) await updateTemplate(db, template.id, form, req.user!.email)
    return reply.redirect(`/services/${service.id}/templates/${template.id}?saved=1`)
  })

  scope.get<P>('/services/:sid/templates/:tid/versions', async (req, reply) => {
    const service = await serviceFor(db, req.user!, req.params.sid)
    const template = await templateFor(dir, service, req.params.tid)
    return render(reply, 'template-versions', { service, template, versions: await templateVersions(db, service.id, template.id) })
  })
}
