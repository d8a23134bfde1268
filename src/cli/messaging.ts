/** `herald service|key|template|member …`: setting up who may send what, from the command line. */
import { readFileSync } from 'node:fs'
import { messagingKeys } from '../messaging/index.ts'
import { KEY_TYPES, type KeyType } from '../messaging/keys.ts'
import { checkPhone } from '../messaging/phone.ts'
import { addRecipient, archiveTemplate, createKey, createService, createTemplate, findService, listServices, revokeKey, updateTemplate } from '../messaging/services.ts'
import { placeholders } from '../messaging/templates.ts'
import { table, withDb } from './context.ts'

const print = (json: boolean | undefined, value: unknown, text: string) => console.log(json ? JSON.stringify(value, null, 2) : text)

export async function serviceCreateCommand(name: string, o: { sender?: string; international?: boolean; restricted?: boolean; rateLimit?: number; messageLimit?: number; timezone?: string; json?: boolean }) {
  return withDb(async ({ db }) => {
    const s = await createService(db, { name, smsSender: o.sender, international: o.international, restricted: o.restricted, rateLimit: o.rateLimit, messageLimit: o.messageLimit, timezone: o.timezone })
    print(o.json, s, `service "${s.name}" created: id ${s.id}\nnext: herald key create --service ${s.id} --name NAME --type normal|team|test`)
  })
}

export async function serviceListCommand(o: { json?: boolean }) {
  return withDb(async ({ db }) => {
    const all = await listServices(db)
    print(o.json, all, all.length ? table(all.map((s) => ({ id: s.id, name: s.name, sender: s.smsSender, international: s.international, restricted: s.restricted, 'rate/min': s.rateLimit, 'texts/day': s.messageLimit }))) : 'no services yet: herald service create NAME')
  })
}

export async function keyCreateCommand(o: { service: string; name: string; type: string; json?: boolean }) {
  if (!KEY_TYPES.includes(o.type as KeyType)) throw new Error(`--type must be one of ${KEY_TYPES.join(', ')}`)
  return withDb(async ({ db, config }) => {
    const service = await findService(db, o.service)
    const k = await createKey(db, messagingKeys(config).secrets, service.id, o.name, o.type as KeyType)
    print(o.json, { id: k.id, service_id: service.id, type: o.type, key: k.key },
      `API key "${o.name}" (${o.type}) for ${service.name}. Copy it now: it is not shown again.\n\n  ${k.key}\n`)
  })
}

export async function keyRevokeCommand(key: string, o: { service: string }) {
  return withDb(async ({ db }) => {
    const service = await findService(db, o.service)
    const n = await revokeKey(db, service.id, key)
    if (n === 0) throw new Error(`no unrevoked key "${key}" in service ${service.name}`)
    console.log(`revoked "${key}": tokens signed with it are refused from now (API processes within HERALD_API_CACHE_MS)`)
  })
}

const bodyOf = (o: { body?: string; file?: string }) => (o.file ? readFileSync(o.file, 'utf8') : o.body)

export async function templateCreateCommand(o: { service: string; name: string; body?: string; file?: string; json?: boolean }) {
  const body = bodyOf(o)
  if (!body?.trim()) throw new Error('a template needs --body TEXT or --file FILE')
  return withDb(async ({ db }) => {
    const service = await findService(db, o.service)
    const t = await createTemplate(db, service.id, o.name, body, process.env.USER || 'herald')
    const names = placeholders(t.body)
    print(o.json, t, `template "${t.name}" created: id ${t.id} (version 1)${names.length ? `; personalisation: ${names.join(', ')}` : ''}`)
  })
}

export async function templateUpdateCommand(id: string, o: { name?: string; body?: string; file?: string }) {
  return withDb(async ({ db }) => {
    const t = await updateTemplate(db, id, { name: o.name, body: bodyOf(o) }, process.env.USER || 'herald')
    console.log(`template ${t.id} is now version ${t.version}`)
  })
}

export async function templateArchiveCommand(id: string) {
  return withDb(async ({ db }) => {
    await archiveTemplate(db, id)
    console.log(`template ${id} archived: texts asking for it are refused ("Template has been deleted")`)
  })
}

export async function memberAddCommand(o: { service: string; phone: string; name?: string; guest?: boolean }) {
  return withDb(async ({ db, config }) => {
    const service = await findService(db, o.service)
    const p = checkPhone(o.phone, config.exposure.defaultRegion)
    if (!p.ok) throw new Error(`--phone: ${p.message}`)
    await addRecipient(db, messagingKeys(config).sealer, service.id, p.e164, o.guest ? 'guest' : 'member', o.name)
    console.log(`${o.guest ? 'guest list entry' : 'team member'} added to ${service.name}: team keys may text this number`)
  })
}
