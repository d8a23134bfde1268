/**
 * `herald user`: the console's people, from a terminal. The first administrator is made here
 * (`herald user create --admin`), and a forgotten password is reset here: an operator's command,
 * not an email link, so Herald needs no mail server to be safe.
 */
import { randomBytes } from 'node:crypto'
import { text } from 'node:stream/consumers'
import { PIPELINE_PERMISSIONS, SERVICE_PERMISSIONS, createUser, resetPassword, setPipelinePermissions, setServicePermissions,
  normalEmail, userIdByEmail, type PipelinePermission, type ServicePermission } from '../console/users.ts'
import { findService } from '../messaging/services.ts'
import { table, withDb } from './context.ts'

/** The password from stdin (--password-stdin), else a new random one printed once. */
async function password(fromStdin?: boolean): Promise<{ value: string; generated: boolean }> {
  if (fromStdin) return { value: (await text(process.stdin)).replace(/\r?\n$/, ''), generated: false }
  return { value: randomBytes(15).toString('base64url'), generated: true }
}

const told = (p: { value: string; generated: boolean }) =>
  p.generated ? `\n  password: ${p.value}\n  (shown once: give it to them by a safe channel)` : ''

export async function userCreateCommand(opts: { email: string; name: string; admin?: boolean; passwordStdin?: boolean }) {
  const p = await password(opts.passwordStdin)
  return withDb(async ({ db }) => {
    await createUser(db, { email: opts.email, name: opts.name, password: p.value, admin: opts.admin })
    console.log(`created ${opts.admin ? 'platform admin ' : ''}${normalEmail(opts.email)}: they sign in at the console's address${told(p)}`)
  })
}

export async function userResetCommand(opts: { email: string; passwordStdin?: boolean }) {
  const p = await password(opts.passwordStdin)
  return withDb(async ({ db }) => {
    await resetPassword(db, opts.email, p.value)
    console.log(`new password set for ${normalEmail(opts.email)}; their sessions are ended${told(p)}`)
  })
}

const list = <T extends string>(raw: string, allowed: readonly T[], what: string): T[] => {
  const items = raw.split(',').map((s) => s.trim()).filter(Boolean)
  const bad = items.filter((i) => !allowed.includes(i as T))
  if (bad.length) throw new Error(`not ${what} permissions: ${bad.join(', ')} (one of ${allowed.join(', ')})`)
  return items as T[]
}

export async function userGrantCommand(opts: { email: string; service?: string; permissions?: string; pipeline?: string }) {
  if (Boolean(opts.service) === Boolean(opts.pipeline !== undefined)) throw new Error('give --service NAME --permissions LIST, or --pipeline LIST')
  return withDb(async ({ db }) => {
    const u = { id: await userIdByEmail(db, opts.email) }
    if (opts.pipeline !== undefined) {
      await setPipelinePermissions(db, u.id, list<PipelinePermission>(opts.pipeline, PIPELINE_PERMISSIONS, 'pipeline'))
    } else {
      const service = await findService(db, opts.service!)
      await setServicePermissions(db, u.id, service.id, list<ServicePermission>(opts.permissions ?? '', SERVICE_PERMISSIONS, 'service'))
    }
    console.log(`permissions set for ${normalEmail(opts.email)}`)
  })
}

export async function userListCommand() {
  return withDb(async ({ db }) => {
    const rows = await db.query(
      `SELECT u.email, u.name, u.platform_admin AS admin, u.totp_secret IS NOT NULL AS two_step, coalesce(array_to_string(p.permissions, ','), '') AS pipeline,
              (SELECT count(*)::int FROM service_users s WHERE s.user_id = u.id) AS services
       FROM users u LEFT JOIN pipeline_users p ON p.user_id = u.id ORDER BY u.email`)
    console.log(rows.length ? table(rows) : 'no users yet: herald user create --admin --email EMAIL --name NAME')
  })
}
