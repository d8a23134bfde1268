/**
 * A service's team, as GOV.UK Notify's "Team members": who is in it with what permissions, a form
 * to invite someone by email with permissions, and a form per member to change theirs (all need
 * manage_service). Herald sends no email yet, so an invitation's link is shown once to the inviter
 * to copy. The link's page (/invitation/:token, open to the signed-out) lets the invited person
 * set a name and password, or, signed in as the invited email, accept.
 */
import type { FastifyRequest } from 'fastify'
import { acceptInvitation, createInvitation, findInvitation, INVITATION_DAYS, pendingInvitations, teamOf } from '../invitations.ts'
import { httpError, type Pages } from '../app.ts'
import { startSession } from '../sessions.ts'
import { PERMISSION_LABELS, SERVICE_PERMISSIONS, setServicePermissions, userIdByEmail, UserError, type ServicePermission } from '../users.ts'
import { setSession } from './auth.ts'
import { field, fields, serviceFor, UUID, type Form } from './services.ts'

type P = { Params: { sid: string; uid: string; token: string }; Body: Form }

const linkOf = (req: FastifyRequest, token: string) => `${req.protocol}://${req.headers.host ?? 'localhost'}/invitation/${token}`

export const teamPages: Pages = (scope, { db, render }) => {
  const teamPage = async (sid: string) => ({ members: await teamOf(db, sid), invited: await pendingInvitations(db, sid), labels: PERMISSION_LABELS, all: SERVICE_PERMISSIONS })

  scope.get<P>('/services/:sid/team', async (req, reply) => {
    const service = await serviceFor(db, req.user!, req.params.sid, 'manage_service')
    return render(reply, 'team-list', { service, ...(await teamPage(service.id)), form: { permissions: ['view_activity'] } })
  })

  scope.post<P>('/services/:sid/team/invite', async (req, reply) => {
    const service = await serviceFor(db, req.user!, req.params.sid, 'manage_service')
    const form = { email: field(req.body, 'email').trim(), permissions: fields(req.body, 'permissions') }
    try {
      const token = await createInvitation(db, { serviceId: service.id, email: form.email, permissions: form.permissions, invitedBy: req.user!.id })
      // The token is shown here once: only its hash is kept.
      return render(reply, 'team-invited', { service, email: form.email.toLowerCase(), link: linkOf(req, token), days: INVITATION_DAYS })
    } catch (err) {
      if (!(err instanceof UserError)) throw err
      return render(reply.code(400), 'team-list', { service, ...(await teamPage(service.id)), form, error: err.message, errorField: err.field })
    }
  })

  scope.post<P>('/services/:sid/team/:uid', async (req, reply) => {
    const service = await serviceFor(db, req.user!, req.params.sid, 'manage_service')
    const member = UUID.test(req.params.uid) ? (await teamOf(db, service.id)).find((m) => m.id === req.params.uid.toLowerCase()) : undefined
    if (!member) throw httpError(404, 'There is no such member of this team')
    const permissions = fields(req.body, 'permissions')
    if (permissions.some((p) => !SERVICE_PERMISSIONS.includes(p as ServicePermission))) throw httpError(400, 'Permissions: choose from the list')
    // Taking away your own right to manage the team would leave you unable to undo it.
    if (member.id === req.user!.id && !req.user!.admin && !permissions.includes('manage_service')) {
      return render(reply.code(400), 'team-list', { service, ...(await teamPage(service.id)), form: { permissions: ['view_activity'] },
        error: 'You cannot take away your own permission to manage the team', errorField: `member-${member.id}` })
    }
    await setServicePermissions(db, member.id, service.id, permissions as ServicePermission[])
    return reply.redirect(`/services/${service.id}/team`)
  })

  const invitationPage = async (req: FastifyRequest<P>) => {
    const invitation = await findInvitation(db, req.params.token)
    if (!invitation) throw httpError(404, 'This invitation has expired or has already been used: ask the person who invited you for a new one')
    const hasAccount = await userIdByEmail(db, invitation.email).then(() => true, () => false)
    const wrongUser = req.user && req.user.email !== invitation.email
    return { invitation, hasAccount, wrongUser, labels: PERMISSION_LABELS, token: req.params.token }
  }

  scope.get<P>('/invitation/:token', async (req, reply) => render(reply, 'invitation', { ...(await invitationPage(req)), form: {} }))

  scope.post<P>('/invitation/:token', async (req, reply) => {
    const page = await invitationPage(req)
    if (page.wrongUser) throw httpError(403, 'You are signed in as someone else: sign out, then open the invitation again')
    const form = { name: field(req.body, 'name').trim() }
    try {
      if (req.user) {
        await acceptInvitation(db, req.params.token, req.user.id)
      } else {
        if (page.hasAccount) return reply.redirect(`/sign-in?next=${encodeURIComponent(`/invitation/${req.params.token}`)}`)
        if (field(req.body, 'password') !== field(req.body, 'confirm')) throw new UserError('The passwords do not match', 'confirm')
        const { userId } = await acceptInvitation(db, req.params.token, { name: form.name, password: field(req.body, 'password') })
        setSession(req, reply, await startSession(db, userId, false))
      }
    } catch (err) {
      if (!(err instanceof UserError)) throw err
      return render(reply.code(400), 'invitation', { ...page, form, error: err.message, errorField: err.field })
    }
    const sid = page.invitation.serviceId
    return reply.redirect(page.invitation.permissions.includes('view_activity') ? `/services/${sid}` : `/services/${sid}/templates`)
  })
}
