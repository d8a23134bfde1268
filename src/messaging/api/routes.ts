/**
 * The public API v2 (GOV.UK Notify-compatible, SMS): send a text (now, or scheduled within 24 hours),
 * read notifications, read and preview templates. Each request is authenticated (auth.ts), checked
 * against its schema with Notify's messages, then admitted (admit.ts, with the others of its moment)
 * before its template and recipient are judged, as Notify checks the limits first.
 */
import type { FastifyInstance, FastifyRequest } from 'fastify'
import type { Db } from '../../db/types.ts'
import type { Sealer } from '../../privacy/seal.ts'
import { checkPhone } from '../phone.ts'
import { render } from '../templates.ts'
import { Admitter } from './admit.ts'
import type { Authenticator, Caller } from './auth.ts'
import type { Directory } from './directory.ts'
import { ApiError, badRequest, notFound, shown, validation } from './errors.ts'
import { openApi } from './openapi.ts'
import { presentNotification, presentTemplate } from './present.ts'
import { submitSms, type SmsRequest } from './submit.ts'
import { emailRoutes } from '../email/api.ts'
import { bodyHtml, renderEmail } from '../email/format.ts'
import { callbackRoutes } from '../callbacks/routes.ts'
import { receivedTextRoutes } from '../inbound/api.ts'

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i
const PAGE = 250
const STATUSES = ['cancelled', 'created', 'sending', 'sent', 'delivered', 'pending', 'failed', 'technical-failure', 'temporary-failure',
  'permanent-failure', 'pending-virus-check', 'validation-failed', 'virus-scan-failed', 'returned-letter', 'accepted', 'received']
const FAILED = ['technical-failure', 'temporary-failure', 'permanent-failure', 'validation-failed']

export interface ApiDeps { db: Db; dir: Directory; sealer: Sealer; auth: Authenticator; region: string; /** The From of emails (HERALD_EMAIL_FROM). */ emailFrom?: string }

const baseUrl = (req: FastifyRequest) => `${req.protocol}://${req.headers.host ?? 'localhost'}`
const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v)

/** Notify's schema messages for POST /v2/notifications/sms. */
function checkSmsRequest(body: unknown, region: string): string[] {
  const b = isObject(body) ? body : {}
  const errors: string[] = []
  for (const k of ['phone_number', 'template_id']) if (b[k] === undefined || b[k] === null) errors.push(`${k} is a required property`)
  const extra = Object.keys(b).filter((k) => !['phone_number', 'template_id', 'personalisation', 'reference', 'sms_sender_id', 'scheduled_for'].includes(k))
  if (extra.length) errors.push(`Additional properties are not allowed (${extra.join(', ')} was unexpected)`)
  if (b.template_id !== undefined && b.template_id !== null && (typeof b.template_id !== 'string' || !UUID.test(b.template_id))) errors.push('template_id is not a valid UUID')
  if (b.sms_sender_id !== undefined && b.sms_sender_id !== null && (typeof b.sms_sender_id !== 'string' || !UUID.test(b.sms_sender_id))) errors.push('sms_sender_id is not a valid UUID')
  if (b.personalisation !== undefined && b.personalisation !== null && !isObject(b.personalisation)) errors.push(`personalisation ${shown(b.personalisation)} is not of type object`)
  if (b.reference !== undefined && b.reference !== null && typeof b.reference !== 'string') errors.push(`reference ${shown(b.reference)} is not of type string`)
  else if (typeof b.reference === 'string' && b.reference.length > 1000) errors.push(`reference ${shown(b.reference)} is too long`)
  if (b.scheduled_for !== undefined && b.scheduled_for !== null) {
    const problem = typeof b.scheduled_for === 'string' ? scheduleProblem(b.scheduled_for) : `${shown(b.scheduled_for)} is not of type string, null`
    if (problem) errors.push(`scheduled_for ${problem}`)
  }
  if (b.phone_number !== undefined && b.phone_number !== null) {
    if (typeof b.phone_number !== 'string') errors.push(`phone_number ${shown(b.phone_number)} is not of type string`)
    else {
      const p = checkPhone(b.phone_number, region)
      if (!p.ok) errors.push(`phone_number ${p.message}`)
    }
  }
  return errors
}

const ISO = /^(\d{4})-(\d\d)-(\d\d)(?:[T ](\d\d):(\d\d)(?::(\d\d)(?:[.,]\d+)?)?)?(Z|[+-]\d\d(?::?\d\d)?)?$/i

/** An ISO 8601 time as Notify's iso8601.parse_date reads it: no zone is UTC; a day that does not exist is no date. */
export function parseIso(text: string): Date | undefined {
  const m = ISO.exec(text.trim())
  if (!m) return undefined
  const [, y, mo, d, h = '00', mi = '00', sec = '00'] = m
  const zone = !m[7] || m[7].toUpperCase() === 'Z' ? 'Z' : m[7].length === 3 ? `${m[7]}:00` : m[7].replace(/^([+-]\d\d)(\d\d)$/, '$1:$2')
  const at = new Date(`${y}-${mo}-${d}T${h}:${mi}:${sec}${text.trim().match(/[.,]\d+/)?.[0].replace(',', '.').slice(0, 4) ?? ''}${zone}`)
  const day = new Date(Date.UTC(+y, +mo - 1, +d))
  if (Number.isNaN(at.getTime()) || day.getUTCMonth() !== +mo - 1 || day.getUTCDate() !== +d || +h > 23 || +mi > 59 || +sec > 59) return undefined
  return at
}

/** Notify's format "datetime_within_next_day": from now to 24 hours ahead. */
function scheduleProblem(text: string): string | undefined {
  const at = parseIso(text)
  if (!at) return 'datetime format is invalid. It must be a valid ISO8601 date time format, https://en.wikipedia.org/wiki/ISO_8601'
  if (at.getTime() < Date.now()) return 'datetime can not be in the past'
  if (at.getTime() > Date.now() + 24 * 3600_000) return 'datetime can only be 24 hours in the future'
  return undefined
}

export function messagingApi(deps: ApiDeps) {
  const { db, dir, sealer, region } = deps
  const admitter = new Admitter(db)
  const caller = (req: FastifyRequest) => deps.auth.callerOf(req)

  return (app: FastifyInstance) => {
    app.get('/v2/openapi.json', async () => openApi)
    emailRoutes({ db, dir, sealer, emailFrom: deps.emailFrom ?? 'notify@localhost' }, admitter, caller, { parse: parseIso, problem: scheduleProblem })(app)
    callbackRoutes({ db, sealer, caller })(app) // Herald's own: a service's callbacks (docs/notify-api-reference.md)
    receivedTextRoutes({ db, sealer, caller })(app) // GET /v2/received-text-messages

    app.post('/v2/notifications/sms', async (req, reply) => {
      const { service, key } = await caller(req)
      const errors = checkSmsRequest(req.body, region)
      if (errors.length) throw validation(errors)
      const b = req.body as SmsRequest & { scheduled_for?: string }
      const by = { service, keyType: key.keyType, apiKeyId: key.id, request: true }
      const { id, template, text } = await submitSms(deps, admitter, by, b, b.scheduled_for ? parseIso(b.scheduled_for) : null)
      const base = baseUrl(req)
      return reply.code(201).send({
        id, reference: b.reference ?? null, uri: `${base}/v2/notifications/${id}`,
        template: { id: template.id, version: template.version, uri: `${base}/services/${service.id}/templates/${template.id}` },
        scheduled_for: b.scheduled_for ?? null, content: { from_number: service.smsSender, body: text },
      })
    })

    // Herald's own, beside Notify's routes: a scheduled text not yet due can be cancelled (Notify's API has no such call).
    app.post<{ Params: { id: string } }>('/v2/notifications/:id/cancel', async (req) => {
      const { service } = await caller(req)
      if (!UUID.test(req.params.id)) throw validation('notification_id is not a valid UUID')
      const [done] = await db.query(`UPDATE notifications SET status = 'cancelled', completed_at = now(), updated_at = now()
        WHERE id = $1 AND service_id = $2 AND status = 'created' AND scheduled_for > now() RETURNING id`, [req.params.id, service.id])
      const [row] = await db.query(`${SELECT_NOTIFICATIONS} WHERE n.id = $1 AND n.service_id = $2`, [req.params.id, service.id])
      if (!row) throw notFound()
      if (!done) throw badRequest('Notification cannot be cancelled - only a text scheduled for later can be cancelled, before its time')
      return presentNotification(row, sealer, baseUrl(req))
    })

    app.get<{ Params: { id: string } }>('/v2/notifications/:id', async (req) => {
      const { service } = await caller(req)
      if (!UUID.test(req.params.id)) throw validation('notification_id is not a valid UUID')
      const [row] = await db.query(`${SELECT_NOTIFICATIONS} WHERE n.id = $1 AND n.service_id = $2`, [req.params.id, service.id])
      if (!row) throw notFound()
      return presentNotification(row, sealer, baseUrl(req))
    })

    app.get('/v2/notifications', async (req) => listNotifications(req, await caller(req)))

    app.get<{ Params: { id: string; version?: string } }>('/v2/template/:id', async (req) => presentTemplate(await templateOf(req, await caller(req))))
    app.get<{ Params: { id: string; version: string } }>('/v2/template/:id/version/:version', async (req) => presentTemplate(await templateOf(req, await caller(req))))
    app.get<{ Querystring: { type?: string } }>('/v2/templates', async (req) => {
      const { service } = await caller(req)
      const type = req.query.type
      if (type !== undefined && !['sms', 'email', 'letter', 'broadcast'].includes(type)) throw validation(`type ${type} is not one of [sms, email, letter, broadcast]`)
      return { templates: (await dir.templatesOf(service.id)).filter((t) => !type || t.type === type).map(presentTemplate) }
    })
    app.post<{ Params: { id: string } }>('/v2/template/:id/preview', async (req) => {
      const template = await templateOf(req, await caller(req))
      const body = isObject(req.body) ? req.body : {}
      if (body.personalisation !== undefined && body.personalisation !== null && !isObject(body.personalisation)) {
        throw validation(`personalisation ${shown(body.personalisation)} is not of type object`)
      }
      if (template.type === 'email') {
        const email = renderEmail(template.subject ?? '', template.body, body.personalisation as Record<string, unknown> | undefined)
        if (email.missing.length) throw badRequest(`Missing personalisation: ${email.missing.join(', ')}`)
        return { id: template.id, type: 'email', version: template.version, body: email.body, html: bodyHtml(email.body), subject: email.subject, postage: null }
      }
      const { text, missing } = render(template.body, body.personalisation as Record<string, unknown> | undefined)
      if (missing.length) throw badRequest(`Missing personalisation: ${missing.join(', ')}`)
      return { id: template.id, type: 'sms', version: template.version, body: text, html: null, subject: null, postage: null }
    })
  }

  async function templateOf(req: FastifyRequest<{ Params: { id: string; version?: string } }>, { service }: Caller) {
    if (!UUID.test(req.params.id)) throw validation('template_id is not a valid UUID')
    const version = req.params.version === undefined ? undefined : Number(req.params.version)
    if (version !== undefined && !(Number.isInteger(version) && version > 0)) throw validation(`version ${shown(req.params.version)} is not of type integer`)
    if (version !== undefined && version > 2147483647) throw notFound() // no such version: Notify answers its DataError so
    const t = await dir.template(service.id, req.params.id.toLowerCase(), version)
    if (!t) throw notFound()
    return t
  }

  async function listNotifications(req: FastifyRequest, { service, key }: Caller) {
    const q = req.query as Record<string, string | string[] | undefined>
    const errors: string[] = []
    const extra = Object.keys(q).filter((k) => !['reference', 'status', 'template_type', 'include_jobs', 'older_than'].includes(k))
    if (extra.length) errors.push(`Additional properties are not allowed (${extra.join(', ')} was unexpected)`)
    const statuses = [q.status ?? []].flat()
    for (const s of statuses) if (!STATUSES.includes(s)) errors.push(`status ${s} is not one of [${STATUSES.join(', ')}]`)
    const types = [q.template_type ?? []].flat()
    for (const t of types) if (!['sms', 'email', 'letter'].includes(t)) errors.push(`template_type ${t} is not one of [sms, email, letter]`)
    const olderThan = [q.older_than ?? []].flat()[0]
    if (olderThan !== undefined && !UUID.test(olderThan)) errors.push('older_than is not a valid UUID')
    if (errors.length) throw validation(errors)
    const wanted = statuses.flatMap((s) => (s === 'failed' ? FAILED : s === 'accepted' ? ['created', 'sending'] : s === 'received' ? ['delivered'] : [s]))
    const rows = await db.query(
      `${SELECT_NOTIFICATIONS}
       WHERE n.service_id = $1 AND n.key_type = $2
         AND (cardinality($3::text[]) = 0 OR n.status = ANY($3)) AND (cardinality($4::text[]) = 0 OR n.notification_type = ANY($4))
         AND ($5::text IS NULL OR n.reference = $5) AND ($6::boolean OR n.job_id IS NULL)
         AND ($7::uuid IS NULL OR (n.created_at, n.id) < (SELECT created_at, id FROM notifications WHERE id = $7 AND service_id = $1))
       ORDER BY n.created_at DESC, n.id DESC LIMIT ${PAGE}`,
      [service.id, key.keyType, wanted, types, [q.reference ?? []].flat()[0] ?? null, [q.include_jobs].flat()[0] === 'true', olderThan ?? null])
    const base = baseUrl(req)
    const current = new URL(`${base}${req.url}`)
    const links: { current: string; next?: string } = { current: current.toString() }
    if (rows.length > 0) {
      current.searchParams.set('older_than', rows[rows.length - 1].id)
      links.next = current.toString()
    }
    return { notifications: rows.map((r) => presentNotification(r, sealer, base)), links }
  }
}

const SELECT_NOTIFICATIONS = `SELECT n.*, v.body AS template_body, v.subject AS template_subject FROM notifications n
  LEFT JOIN template_versions v ON v.template_id = n.template_id AND v.version = n.template_version`
