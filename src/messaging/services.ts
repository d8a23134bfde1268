/**
 * Services and what they own: API keys, templates (each change a new version), and the people a
 * team key may text. What the CLI (and later an admin API) calls; the API reads through cache.ts.
 */
import { randomUUID } from 'node:crypto'
import type { Queryable } from '../db/types.ts'
import type { Sealer } from '../privacy/seal.ts'
import { type KeySecrets, type KeyType } from './keys.ts'

export interface Service {
  id: string
  name: string
  smsSender: string
  international: boolean
  restricted: boolean
  rateLimit: number
  messageLimit: number
  timezone: string
}

export interface ServiceInput {
  name: string
  smsSender?: string
  international?: boolean
  restricted?: boolean
  rateLimit?: number
  messageLimit?: number
  timezone?: string
}

const serviceRow = (r: Record<string, any>): Service => ({
  id: r.id, name: r.name, smsSender: r.sms_sender, international: r.international, restricted: r.restricted,
  rateLimit: r.rate_limit, messageLimit: r.message_limit, timezone: r.timezone,
})

export class NotFound extends Error {}

export async function createService(db: Queryable, s: ServiceInput): Promise<Service> {
  const [row] = await db.query(
    `INSERT INTO services (id, name, sms_sender, international, restricted, rate_limit, message_limit, timezone)
     VALUES ($1, $2, $3, $4, $5, coalesce($6, 3000), coalesce($7, 250000), coalesce($8, 'America/New_York')) RETURNING *`,
    [randomUUID(), s.name, s.smsSender ?? s.name.slice(0, 11), s.international ?? false, s.restricted ?? false, s.rateLimit ?? null,
      s.messageLimit ?? null, s.timezone ?? null])
  return serviceRow(row)
}

/** A service by id, or by its exact name. */
export async function findService(db: Queryable, idOrName: string): Promise<Service> {
  const [row] = await db.query(`SELECT * FROM services WHERE id::text = $1 OR name = $1`, [idOrName])
  if (!row) throw new NotFound(`no service "${idOrName}" (herald service list shows them)`)
  return serviceRow(row)
}

export async function listServices(db: Queryable): Promise<Service[]> {
  return (await db.query('SELECT * FROM services ORDER BY created_at')).map(serviceRow)
}

export async function createKey(db: Queryable, secrets: KeySecrets, serviceId: string, name: string, type: KeyType) {
  const k = secrets.newKey(serviceId, name)
  await db.query(`INSERT INTO api_keys (id, service_id, name, key_type, secret_hash) VALUES ($1, $2, $3, $4, $5)`,
    [k.id, serviceId, name, type, k.secretHash])
  return { id: k.id, key: k.key }
}

export interface KeyInfo { id: string; name: string; type: KeyType; createdAt: string; revokedAt: string | null }

/** A service's keys, newest first: never their secrets (which are not stored). */
export async function listKeys(db: Queryable, serviceId: string): Promise<KeyInfo[]> {
  const rows = await db.query('SELECT id, name, key_type, created_at, revoked_at FROM api_keys WHERE service_id = $1 ORDER BY revoked_at IS NOT NULL, created_at DESC', [serviceId])
  return rows.map((r) => ({ id: r.id, name: r.name, type: r.key_type, createdAt: new Date(r.created_at).toISOString(), revokedAt: r.revoked_at ? new Date(r.revoked_at).toISOString() : null }))
}

export async function revokeKey(db: Queryable, serviceId: string, idOrName: string): Promise<number> {
  const rows = await db.query(`UPDATE api_keys SET revoked_at = now() WHERE service_id = $1 AND (id::text = $2 OR name = $2) AND revoked_at IS NULL RETURNING id`,
    [serviceId, idOrName])
  return rows.length
}

export type TemplateType = 'sms' | 'email'

export interface Template { id: string; serviceId: string; type: TemplateType; name: string; subject: string | null; body: string; version: number; archived: boolean
  createdBy: string; createdAt: string; updatedAt: string | null }

/** A new template: a text's (the default), or an email's with its subject. */
export async function createTemplate(db: Queryable, serviceId: string, name: string, body: string, createdBy: string,
  kind: { type: 'sms' } | { type: 'email'; subject: string } = { type: 'sms' }): Promise<Template> {
  const id = randomUUID()
  const subject = kind.type === 'email' ? kind.subject : null
  const [row] = await db.query(`INSERT INTO templates (id, service_id, name, body, created_by, type, subject) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING *`,
    [id, serviceId, name, body, createdBy, kind.type, subject])
  await db.query(`INSERT INTO template_versions (template_id, version, name, body, created_by, subject) VALUES ($1, 1, $2, $3, $4, $5)`, [id, name, body, createdBy, subject])
  return templateRow(row)
}

/** A new version of a template (its body and/or name); the versions sent before stay as they were. */
export async function updateTemplate(db: Queryable, id: string, change: { name?: string; body?: string; subject?: string }, by: string): Promise<Template> {
  const [row] = await db.query(
    `UPDATE templates SET name = coalesce($2, name), body = coalesce($3, body), version = version + 1, updated_at = now(), created_by = $4,
       subject = CASE WHEN type = 'email' THEN coalesce($5, subject) END
     WHERE id::text = $1 RETURNING *`, [id, change.name ?? null, change.body ?? null, by, change.subject ?? null])
  if (!row) throw new NotFound(`no template ${id}`)
  await db.query(`INSERT INTO template_versions (template_id, version, name, body, created_by, subject) VALUES ($1, $2, $3, $4, $5, $6)`,
    [row.id, row.version, row.name, row.body, by, row.subject])
  return templateRow(row)
}

/** Every version of a service's template, newest first (none when the template is not the service's). */
export async function templateVersions(db: Queryable, serviceId: string, templateId: string): Promise<{ version: number; name: string; body: string; createdBy: string; createdAt: string }[]> {
  const rows = await db.query(
    `SELECT v.version, v.name, v.body, v.created_by, v.created_at FROM template_versions v JOIN templates t ON t.id = v.template_id
     WHERE t.id = $1 AND t.service_id = $2 ORDER BY v.version DESC`, [templateId, serviceId])
  return rows.map((r) => ({ version: r.version, name: r.name, body: r.body, createdBy: r.created_by, createdAt: new Date(r.created_at).toISOString() }))
}

export async function archiveTemplate(db: Queryable, id: string): Promise<void> {
  const rows = await db.query(`UPDATE templates SET archived = true, updated_at = now() WHERE id::text = $1 RETURNING id`, [id])
  if (rows.length === 0) throw new NotFound(`no template ${id}`)
}

export const templateRow = (r: Record<string, any>): Template => ({
  id: r.id, serviceId: r.service_id, type: r.type ?? 'sms', name: r.name, subject: r.subject ?? null, body: r.body, version: r.version, archived: r.archived, createdBy: r.created_by,
  createdAt: new Date(r.created_at).toISOString(), updatedAt: r.updated_at ? new Date(r.updated_at).toISOString() : null,
})

/** A team member or guest-list entry: a number (E.164) a team key may text. */
export async function addRecipient(db: Queryable, sealer: Sealer, serviceId: string, e164: string, kind: 'member' | 'guest', name?: string) {
  await db.query(
    `INSERT INTO service_recipients (service_id, phone_hash, phone_ct, kind, name_ct) VALUES ($1, $2, $3, $4, $5)
     ON CONFLICT (service_id, phone_hash) DO UPDATE SET kind = excluded.kind, name_ct = coalesce(excluded.name_ct, service_recipients.name_ct)`,
    [serviceId, sealer.hash(e164), sealer.seal(e164), kind, name ? sealer.seal(name) : null])
}
