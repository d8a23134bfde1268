/**
 * A service's team: its members with their permissions, and invitations to join it. An invitation
 * is a link with a random token (only its SHA-256 is kept, as for sessions) that lasts 2 days, as
 * GOV.UK Notify's do; whoever opens it signs in as the invited email (or creates that user) and gets
 * the permissions it names. Herald sends no email yet: the inviter copies the link.
 */
import { createHash, randomBytes } from 'node:crypto'
import type { Db, Queryable } from '../db/types.ts'
import { createUser, normalEmail, SERVICE_PERMISSIONS, setServicePermissions, UserError, type ServicePermission } from './users.ts'

export const INVITATION_DAYS = 2
const EMAIL = /^[^\s@]+@[^\s@]+\.[^\s@]+$/
const digest = (token: string) => createHash('sha256').update(token).digest()

export interface Member { id: string; name: string; email: string; permissions: ServicePermission[] }
export interface Invitation { id: string; serviceId: string; serviceName: string; email: string; permissions: ServicePermission[]; expiresAt: string }

export async function teamOf(db: Queryable, serviceId: string): Promise<Member[]> {
  const rows = await db.query(
    `SELECT u.id, u.name, u.email, su.permissions FROM service_users su JOIN users u ON u.id = su.user_id
     WHERE su.service_id = $1 AND u.disabled_at IS NULL ORDER BY u.name, u.email`, [serviceId])
  return rows.map((r) => ({ id: r.id, name: r.name, email: r.email, permissions: r.permissions }))
}

/** Invitations not yet accepted nor expired. */
export async function pendingInvitations(db: Queryable, serviceId: string): Promise<{ email: string; permissions: ServicePermission[]; expiresAt: string }[]> {
  const rows = await db.query(
    `SELECT email, permissions, expires_at FROM invitations WHERE service_id = $1 AND accepted_at IS NULL AND expires_at > now() ORDER BY created_at`, [serviceId])
  return rows.map((r) => ({ email: r.email, permissions: r.permissions, expiresAt: new Date(r.expires_at).toISOString() }))
}

export function checkPermissions(permissions: string[]): ServicePermission[] {
  const bad = permissions.filter((p) => !SERVICE_PERMISSIONS.includes(p as ServicePermission))
  if (bad.length) throw new UserError(`Unknown permission: ${bad.join(', ')}`, 'permissions')
  return permissions as ServicePermission[]
}

/** A new invitation; answers the token for the link (shown once: only its hash is kept). */
export async function createInvitation(db: Queryable, i: { serviceId: string; email: string; permissions: string[]; invitedBy: string }): Promise<string> {
  const email = normalEmail(i.email)
  if (!EMAIL.test(email)) throw new UserError('Enter a valid email address', 'email')
  const permissions = checkPermissions(i.permissions)
  const [member] = await db.query('SELECT 1 FROM service_users su JOIN users u ON u.id = su.user_id WHERE su.service_id = $1 AND u.email = $2', [i.serviceId, email])
  if (member) throw new UserError(`${email} is already a member of this team`, 'email')
  const token = randomBytes(24).toString('base64url')
  await db.query(
    `INSERT INTO invitations (service_id, email, permissions, token_hash, invited_by, expires_at)
     VALUES ($1, $2, $3, $4, $5, now() + make_interval(days => $6))`, [i.serviceId, email, permissions, digest(token), i.invitedBy, INVITATION_DAYS])
  return token
}

/** The invitation a link carries, while it can still be accepted. */
export async function findInvitation(db: Queryable, token: string): Promise<Invitation | undefined> {
  const [r] = await db.query(
    `SELECT i.id, i.service_id, s.name AS service_name, i.email, i.permissions, i.expires_at FROM invitations i JOIN services s ON s.id = i.service_id
     WHERE i.token_hash = $1 AND i.accepted_at IS NULL AND i.expires_at > now()`, [digest(token)])
  return r && { id: r.id, serviceId: r.service_id, serviceName: r.service_name, email: r.email, permissions: r.permissions, expiresAt: new Date(r.expires_at).toISOString() }
}

/**
 * The user joins the team with the invitation's permissions (added to any they had), and the link is
 * spent; `who` is a signed-in user's id, or the name and password of a new user with the invited
 * email (made in the same transaction). Once only: a second use finds nothing.
 */
export async function acceptInvitation(db: Db, token: string, who: string | { name: string; password: string }): Promise<{ invitation: Invitation; userId: string }> {
  return db.transaction(async (tx) => {
    const inv = await findInvitation(tx, token)
    if (!inv) throw new UserError('This invitation has expired or has already been used: ask for a new one', 'token')
    // The row lock makes two tabs accepting at once wait for each other; the second then finds it spent.
    const [spent] = await tx.query('UPDATE invitations SET accepted_at = now() WHERE id = $1 AND accepted_at IS NULL RETURNING id', [inv.id])
    if (!spent) throw new UserError('This invitation has already been used', 'token')
    const userId = typeof who === 'string' ? who : await createUser(tx, { email: inv.email, name: who.name, password: who.password })
    const [had] = await tx.query<{ permissions: ServicePermission[] }>('SELECT permissions FROM service_users WHERE user_id = $1 AND service_id = $2', [userId, inv.serviceId])
    await setServicePermissions(tx, userId, inv.serviceId, [...new Set([...(had?.permissions ?? []), ...inv.permissions])])
    return { invitation: inv, userId }
  })
}
