/**
 * What every API request reads: services, their keys, templates and team lists. Kept in memory for
 * HERALD_API_CACHE_MS (2 s by default), so a busy API process reads each once in a while, not per
 * request; a revoked key or a new template version is seen by every process within that time.
 */
import type { Db } from '../../db/types.ts'
import { templateRow, type Service, type Template } from '../services.ts'
import type { KeyType } from '../keys.ts'

export interface ApiKey { id: string; serviceId: string; keyType: KeyType; secretHash: Buffer; revoked: boolean }

class Cache<V> {
  private readonly entries = new Map<string, { at: number; value: Promise<V> }>()
  constructor(private readonly ttlMs: number) {}

  get(key: string, load: () => Promise<V>): Promise<V> {
    const hit = this.entries.get(key)
    if (hit && Date.now() - hit.at < this.ttlMs) return hit.value
    const value = load()
    this.entries.set(key, { at: Date.now(), value })
    value.catch(() => this.entries.delete(key))
    if (this.entries.size > 10_000) this.entries.delete(this.entries.keys().next().value!)
    return value
  }
}

export class Directory {
  private readonly services: Cache<Service | undefined>
  private readonly keys: Cache<ApiKey[]>
  private readonly templates: Cache<Template | undefined>
  private readonly recipients: Cache<Set<string>>

  constructor(private readonly db: Db, ttlMs: number) {
    this.services = new Cache(ttlMs)
    this.keys = new Cache(ttlMs)
    this.templates = new Cache(ttlMs)
    this.recipients = new Cache(ttlMs)
  }

  service(id: string) {
    return this.services.get(id, async () => {
      const [r] = await this.db.query('SELECT * FROM services WHERE id = $1', [id])
      return r && {
        id: r.id, name: r.name, smsSender: r.sms_sender, international: r.international, restricted: r.restricted,
        rateLimit: r.rate_limit, messageLimit: r.message_limit, timezone: r.timezone,
      }
    })
  }

  keysOf(serviceId: string) {
    return this.keys.get(serviceId, async () => (await this.db.query(
      'SELECT id, service_id, key_type, secret_hash, revoked_at IS NOT NULL AS revoked FROM api_keys WHERE service_id = $1 ORDER BY created_at', [serviceId]))
      .map((r) => ({ id: r.id, serviceId: r.service_id, keyType: r.key_type, secretHash: Buffer.from(r.secret_hash), revoked: r.revoked })))
  }

  /** A template of the service: its current version, or the version asked for. */
  template(serviceId: string, id: string, version?: number) {
    return this.templates.get(`${serviceId}/${id}/${version ?? ''}`, async () => {
      const [r] = version === undefined
        ? await this.db.query('SELECT * FROM templates WHERE id = $1 AND service_id = $2', [id, serviceId])
        : await this.db.query(
          `SELECT t.id, t.service_id, t.type, v.name, v.subject, v.body, v.version, t.archived, v.created_by, t.created_at, v.created_at AS updated_at
           FROM templates t JOIN template_versions v ON v.template_id = t.id WHERE t.id = $1 AND t.service_id = $2 AND v.version = $3`,
          [id, serviceId, version])
      return r && templateRow(r)
    })
  }

  templatesOf(serviceId: string) {
    return this.db.query('SELECT * FROM templates WHERE service_id = $1 AND NOT archived ORDER BY created_at', [serviceId]).then((rows) => rows.map(templateRow))
  }

  /** Whether a number (by its keyed hash) is a team member or on the guest list. */
  async isRecipient(serviceId: string, phoneHash: Buffer): Promise<boolean> {
    const set = await this.recipients.get(serviceId, async () =>
      new Set((await this.db.query('SELECT phone_hash FROM service_recipients WHERE service_id = $1', [serviceId])).map((r) => Buffer.from(r.phone_hash).toString('hex'))))
    return set.has(phoneHash.toString('hex'))
  }
}
