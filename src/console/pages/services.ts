/**
 * Messaging services in the console, as GOV.UK Notify's admin app: the services a user is in (every
 * service for a platform admin, who alone creates them) and each service's dashboard. `serviceFor`
 * is every service page's gate: a user who is not in the service is refused without a word of it.
 */
import type { FastifyRequest } from 'fastify'
import type { Queryable } from '../../db/types.ts'
import { serviceDashboard } from '../../messaging/dashboard.ts'
import { createService, findService, listServices, NotFound, type Service } from '../../messaging/services.ts'
import { httpError, type Pages } from '../app.ts'
import { canService, inService, PERMISSION_LABELS, type ServicePermission, type User } from '../users.ts'

export type Form = Record<string, string | string[] | undefined>
export const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i
/** A single form field (the first when repeated). */
export const field = (f: Form | undefined, name: string) => String([f?.[name] ?? ''].flat()[0] ?? '')
/** A field that may be given several times (checkboxes). */
export const fields = (f: Form | undefined, name: string) => [f?.[name] ?? []].flat().map(String)

/**
 * The service of a page, once the user may see it: 404 for an id that is no service (to an admin;
 * anyone else not in it gets 403 either way, so an id tells an outsider nothing), 403 without `need`
 * (any membership when not given).
 */
export async function serviceFor(db: Queryable, user: User, sid: string, need?: ServicePermission): Promise<Service> {
  if (!UUID.test(sid)) throw httpError(404, 'There is no such service')
  if (!inService(user, sid)) throw httpError(403, 'You are not a member of this service')
  if (need && !canService(user, sid, need)) throw httpError(403, `You need the permission “${PERMISSION_LABELS[need]}” for this page`)
  const service = await findService(db, sid.toLowerCase()).catch((err) => {
    if (err instanceof NotFound) return undefined
    throw err
  })
  // findService also matches a name: only the service with this id is this page's.
  if (service?.id !== sid.toLowerCase()) throw httpError(404, 'There is no such service')
  return service
}

/** Where a service's name links to: its dashboard, or its templates for a member who may not see the dashboard. */
const homeOf = (user: User, s: Service) => (canService(user, s.id, 'view_activity') ? `/services/${s.id}` : `/services/${s.id}/templates`)

const SENDER = /^[A-Za-z0-9 ]{1,11}$|^\+?[0-9]{3,15}$/

export const servicePages: Pages = (scope, { db, render }) => {
  const list = async (req: FastifyRequest) => (await listServices(db)).filter((s) => inService(req.user!, s.id)).map((s) => ({ ...s, home: homeOf(req.user!, s) }))

  scope.get('/services', async (req, reply) => render(reply, 'service-list', { services: await list(req), form: {} }))

  scope.post<{ Body: Form }>('/services', async (req, reply) => {
    if (!req.user!.admin) throw httpError(403, 'Only a platform admin can create a service')
    const name = field(req.body, 'name').trim()
    const sender = field(req.body, 'sender').trim()
    const again = async (error: string, at: string) => render(reply.code(400), 'service-list', { services: await list(req), form: { name, sender }, error, errorField: at })
    if (!name) return again('Enter a service name', 'name')
    if (name.length > 255) return again('Service name must be 255 characters or fewer', 'name')
    if ((await listServices(db)).some((s) => s.name.toLowerCase() === name.toLowerCase())) return again('This service name is already in use', 'name')
    if (sender && !SENDER.test(sender)) return again('Text message sender must be up to 11 letters, numbers and spaces, or a phone number', 'sender')
    const s = await createService(db, { name, smsSender: sender || undefined })
    return reply.redirect(`/services/${s.id}`)
  })

  scope.get<{ Params: { sid: string } }>('/services/:sid', async (req, reply) => {
    const service = await serviceFor(db, req.user!, req.params.sid, 'view_activity')
    return render(reply, 'service-dashboard', { service, dashboard: await serviceDashboard(db, service.id) })
  })
}
