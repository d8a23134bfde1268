/**
 * The console's users: email + password (argon2id), an optional TOTP second factor (its secret
 * sealed like a phone number), and what each may do: everything (platform admin), GOV.UK Notify's
 * permissions per messaging service, and the pipeline's view / operate. The CLI (`herald user`) and
 * the console's pages both go through these functions.
 */
import { randomBytes } from 'node:crypto'
import { hash, verify } from '@node-rs/argon2'
import { generateSecret, generateURI, verifySync } from 'otplib'
import type { Queryable } from '../db/types.ts'
import type { Sealer } from '../privacy/seal.ts'

export const SERVICE_PERMISSIONS = ['view_activity', 'send_messages', 'manage_templates', 'manage_service', 'manage_api_keys'] as const
export type ServicePermission = (typeof SERVICE_PERMISSIONS)[number]
export const PIPELINE_PERMISSIONS = ['view', 'operate'] as const
export type PipelinePermission = (typeof PIPELINE_PERMISSIONS)[number]

/** Notify's words for each permission, as the team page shows them. */
export const PERMISSION_LABELS: Record<ServicePermission, string> = {
  view_activity: 'See dashboard and activity', send_messages: 'Send messages', manage_templates: 'Add and edit templates',
  manage_service: 'Manage settings and team', manage_api_keys: 'Manage API keys',
}

export interface User {
  id: string
  email: string
  name: string
  admin: boolean
  hasSecondFactor: boolean
  pipeline: Set<PipelinePermission>
  services: Map<string, Set<ServicePermission>>
}

export class UserError extends Error {
  constructor(message: string, readonly field?: string) {
    super(message)
    this.name = 'UserError'
  }
}

/** At least 12 characters: NIST SP 800-63B's floor for a password chosen by its user is 8; ours is higher. */
export const MIN_PASSWORD = 12
const EMAIL = /^[^\s@]+@[^\s@]+\.[^\s@]+$/

export const normalEmail = (email: string) => email.trim().toLowerCase()

export function checkPassword(password: string): void {
  if (password.length < MIN_PASSWORD) throw new UserError(`Password must be at least ${MIN_PASSWORD} characters`, 'password')
  if (password.length > 1024) throw new UserError('Password must be at most 1024 characters', 'password')
}

// OWASP's argon2id settings (19 MiB, 2 passes, 1 lane): the library's default is the same; written down here.
const ARGON = { memoryCost: 19456, timeCost: 2, parallelism: 1 }
export const hashPassword = (password: string) => hash(password, ARGON)

export async function createUser(db: Queryable, u: { email: string; name: string; password: string; admin?: boolean }): Promise<string> {
  const email = normalEmail(u.email)
  if (!EMAIL.test(email)) throw new UserError('Enter a valid email address', 'email')
  if (!u.name.trim()) throw new UserError('Enter a name', 'name')
  checkPassword(u.password)
  const [existing] = await db.query('SELECT 1 FROM users WHERE email = $1', [email])
  if (existing) throw new UserError(`A user with the email ${email} already exists`, 'email')
  const [row] = await db.query<{ id: string }>(
    'INSERT INTO users (email, name, password_hash, platform_admin) VALUES ($1, $2, $3, $4) RETURNING id',
    [email, u.name.trim(), await hashPassword(u.password), Boolean(u.admin)])
  return row.id
}

/** An operator's reset (`herald user reset`): a new password, every session of the user ended, the second factor kept. */
export async function resetPassword(db: Queryable, email: string, password: string): Promise<void> {
  checkPassword(password)
  const rows = await db.query('UPDATE users SET password_hash = $2, password_changed_at = now() WHERE email = $1 RETURNING id', [normalEmail(email), await hashPassword(password)])
  if (rows.length === 0) throw new UserError(`No user with the email ${normalEmail(email)}`, 'email')
  await db.query('DELETE FROM console_sessions WHERE user_id = $1', [rows[0].id])
}

/** The user id when the email and password match an enabled user (the same work either way: no timing tells which emails exist). */
export async function checkLogin(db: Queryable, email: string, password: string): Promise<string | undefined> {
  const [u] = await db.query<{ id: string; password_hash: string }>(
    'SELECT id, password_hash FROM users WHERE email = $1 AND disabled_at IS NULL', [normalEmail(email)])
  const ok = await verify(u?.password_hash ?? (await dummyHash()), password).catch(() => false)
  return u && ok ? u.id : undefined
}
// A hash of nothing anyone knows, verified when the email is unknown.
let dummy: Promise<string> | undefined
const dummyHash = () => (dummy ??= hashPassword(randomBytes(32).toString('hex')))

export async function userIdByEmail(db: Queryable, email: string): Promise<string> {
  const [u] = await db.query<{ id: string }>('SELECT id FROM users WHERE email = $1', [normalEmail(email)])
  if (!u) throw new UserError(`No user with the email ${normalEmail(email)}`, 'email')
  return u.id
}

export async function countUsers(db: Queryable): Promise<number> {
  const [r] = await db.query<{ n: number }>('SELECT count(*)::int AS n FROM users')
  return r.n
}

export async function loadUser(db: Queryable, id: string): Promise<User | undefined> {
  const [u] = await db.query(
    'SELECT id, email, name, platform_admin, totp_secret IS NOT NULL AS has_totp FROM users WHERE id = $1 AND disabled_at IS NULL', [id])
  if (!u) return undefined
  const [p] = await db.query<{ permissions: PipelinePermission[] }>('SELECT permissions FROM pipeline_users WHERE user_id = $1', [id])
  const services = await db.query<{ service_id: string; permissions: ServicePermission[] }>(
    'SELECT service_id, permissions FROM service_users WHERE user_id = $1', [id])
  return {
    id: u.id, email: u.email, name: u.name, admin: u.platform_admin, hasSecondFactor: u.has_totp,
    pipeline: new Set(p?.permissions ?? []), services: new Map(services.map((s) => [s.service_id, new Set(s.permissions)])),
  }
}

export const canPipeline = (u: User, p: PipelinePermission) => u.admin || u.pipeline.has(p) || (p === 'view' && u.pipeline.has('operate'))
export const canService = (u: User, serviceId: string, p: ServicePermission) => u.admin || Boolean(u.services.get(serviceId)?.has(p))
export const inService = (u: User, serviceId: string) => u.admin || u.services.has(serviceId)

export async function setServicePermissions(db: Queryable, userId: string, serviceId: string, permissions: ServicePermission[]) {
  const bad = permissions.filter((p) => !SERVICE_PERMISSIONS.includes(p))
  if (bad.length) throw new UserError(`Unknown permission: ${bad.join(', ')}`, 'permissions')
  await db.query(
    `INSERT INTO service_users (user_id, service_id, permissions) VALUES ($1, $2, $3)
     ON CONFLICT (user_id, service_id) DO UPDATE SET permissions = excluded.permissions`, [userId, serviceId, permissions])
}

export async function setPipelinePermissions(db: Queryable, userId: string, permissions: PipelinePermission[]) {
  const bad = permissions.filter((p) => !PIPELINE_PERMISSIONS.includes(p))
  if (bad.length) throw new UserError(`Unknown permission: ${bad.join(', ')}`, 'permissions')
  await db.query(
    `INSERT INTO pipeline_users (user_id, permissions) VALUES ($1, $2)
     ON CONFLICT (user_id) DO UPDATE SET permissions = excluded.permissions`, [userId, permissions])
}

/** A new TOTP secret and its otpauth:// address (for an authenticator app); kept only once a code from it is confirmed. */
export function newSecondFactor(email: string): { secret: string; uri: string } {
  const secret = generateSecret()
  return { secret, uri: generateURI({ secret, issuer: 'Herald', label: email }) }
}

export const totpValid = (secret: string, code: string) => /^\d{6}$/.test(code.trim()) && verifySync({ secret, token: code.trim() }).valid

export async function confirmSecondFactor(db: Queryable, sealer: Sealer, userId: string, secret: string, code: string): Promise<void> {
  if (!totpValid(secret, code)) throw new UserError('The code is not right: enter the 6 digits your app shows now', 'code')
  await db.query('UPDATE users SET totp_secret = $2 WHERE id = $1', [userId, sealer.seal(secret)])
}

export async function checkSecondFactor(db: Queryable, sealer: Sealer, userId: string, code: string): Promise<boolean> {
  const [u] = await db.query<{ totp_secret: Buffer | null }>('SELECT totp_secret FROM users WHERE id = $1', [userId])
  return Boolean(u?.totp_secret) && totpValid(sealer.open(u.totp_secret!), code)
}
