/** `herald service|key|template|member …`: setting up who may send what, from the command line. */
import { readFileSync } from 'node:fs'
import { text } from 'node:stream/consumers'
import { basename } from 'node:path'
import { Directory } from '../messaging/api/directory.ts'
import { CALLBACK_KINDS, callbackFailures, checkCallback, isCallbackKind, listCallbacks, removeCallback, setCallback } from '../messaging/callbacks/settings.ts'
import type { Queryable } from '../db/types.ts'
import type { Sealer } from '../privacy/seal.ts'
import { cancelJob, createJob } from '../messaging/jobs/jobs.ts'
import { listJobs } from '../messaging/jobs/view.ts'
import { inboundNumbersOf, removeInboundNumber, setInboundNumber } from '../messaging/inbound/numbers.ts'
import { inboundUrls } from '../messaging/inbound/routes.ts'
import { secretKey } from '../privacy/keys.ts'
import { storeFor } from '../storage/index.ts'
import { messagingKeys } from '../messaging/index.ts'
import { KEY_TYPES, type KeyType } from '../messaging/keys.ts'
import { checkPhone } from '../messaging/phone.ts'
import { addRecipient, archiveTemplate, createKey, createService, createTemplate, findService, listServices, revokeKey, updateTemplate } from '../messaging/services.ts'
import { placeholders } from '../messaging/templates.ts'
import { table, withDb } from './context.ts'

const print = (json: boolean | undefined, value: unknown, text: string) => console.log(json ? JSON.stringify(value, null, 2) : text)

/**
 * A name someone else chose (a job file's, a service's, a template's placeholders) as a terminal may
 * show it: control characters (escape sequences that move the cursor or rewrite the screen, bidi
 * overrides that reorder what is read) are shown as their code, \u{1b}, never sent raw.
 */
export const clean = (v: unknown): string =>
  String(v ?? '').replace(/[\u0000-\u001f\u007f-\u009f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/g, (c) => `\\u{${c.charCodeAt(0).toString(16)}}`)

export async function serviceCreateCommand(name: string, o: { sender?: string; international?: boolean; restricted?: boolean; rateLimit?: number; messageLimit?: number; timezone?: string; json?: boolean }) {
  return withDb(async ({ db }) => {
    const s = await createService(db, { name, smsSender: o.sender, international: o.international, restricted: o.restricted, rateLimit: o.rateLimit, messageLimit: o.messageLimit, timezone: o.timezone })
    print(o.json, s, `service "${clean(s.name)}" created: id ${s.id}\nnext: herald key create --service ${s.id} --name NAME --type normal|team|test`)
  })
}

export async function serviceListCommand(o: { json?: boolean }) {
  return withDb(async ({ db }) => {
    const all = await listServices(db)
    print(o.json, all, all.length ? table(all.map((s) => ({ id: s.id, name: clean(s.name), sender: clean(s.smsSender), international: s.international, restricted: s.restricted, 'rate/min': s.rateLimit, 'texts/day': s.messageLimit }))) : 'no services yet: herald service create NAME')
  })
}

export async function keyCreateCommand(o: { service: string; name: string; type: string; json?: boolean }) {
  if (!KEY_TYPES.includes(o.type as KeyType)) throw new Error(`--type must be one of ${KEY_TYPES.join(', ')}`)
  return withDb(async ({ db, config }) => {
    const service = await findService(db, o.service)
    const k = await createKey(db, messagingKeys(config).secrets, service.id, o.name, o.type as KeyType)
    print(o.json, { id: k.id, service_id: service.id, type: o.type, key: k.key },
      `API key "${clean(o.name)}" (${o.type}) for ${clean(service.name)}. Copy it now: it is not shown again.\n\n  ${k.key}\n`)
  })
}

export async function keyRevokeCommand(key: string, o: { service: string }) {
  return withDb(async ({ db }) => {
    const service = await findService(db, o.service)
    const n = await revokeKey(db, service.id, key)
    if (n === 0) throw new Error(`no unrevoked key "${clean(key)}" in service ${clean(service.name)}`)
    console.log(`revoked "${clean(key)}": tokens signed with it are refused from now (API processes within HERALD_API_CACHE_MS)`)
  })
}

const bodyOf = (o: { body?: string; file?: string }) => (o.file ? readFileSync(o.file, 'utf8') : o.body)

export async function templateCreateCommand(o: { service: string; name: string; body?: string; file?: string; email?: boolean; subject?: string; json?: boolean }) {
  const body = bodyOf(o)
  if (!body?.trim()) throw new Error('a template needs --body TEXT or --file FILE')
  if (Boolean(o.email) !== Boolean(o.subject?.trim())) throw new Error('an email template needs --email and --subject TEXT (a text message has no subject)')
  return withDb(async ({ db }) => {
    const service = await findService(db, o.service)
    const kind = o.email ? { type: 'email' as const, subject: o.subject!.trim() } : { type: 'sms' as const }
    const t = await createTemplate(db, service.id, o.name, body, process.env.USER || 'herald', kind)
    const names = placeholders(t.body)
    print(o.json, t, `template "${clean(t.name)}" created: id ${t.id} (version 1)${names.length ? `; personalisation: ${clean(names.join(', '))}` : ''}`)
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
    console.log(`${o.guest ? 'guest list entry' : 'team member'} added to ${clean(service.name)}: team keys may text this number`)
  })
}

export async function jobsCommand(o: { service?: string; json?: boolean }) {
  return withDb(async ({ db }) => {
    const service = o.service ? await findService(db, o.service) : undefined
    const rows = await listJobs(db, service?.id ?? null)
    print(o.json, rows, rows.length ? table(rows.map((r) => ({
      id: r.id, service: clean(r.service), file: clean(r.original_name), status: r.status, progress: `${r.rows_done}/${r.rows}`, delivered: r.delivered, failed: r.failed,
      when: r.scheduled_for ? `at ${new Date(r.scheduled_for).toISOString()}` : new Date(r.created_at).toISOString(), error: clean(r.error),
    }))) : 'no jobs yet: herald jobs create FILE --service S --template T')
  })
}

export async function jobCreateCommand(file: string, o: { service: string; template: string; at?: string; json?: boolean }) {
  const at = o.at ? new Date(o.at) : undefined
  if (at && Number.isNaN(at.getTime())) throw new Error(`--at: "${o.at}" is not a date and time (e.g. 2026-11-24T09:00:00-05:00)`)
  return withDb(async ({ db, config }) => {
    const service = await findService(db, o.service)
    const dir = new Directory(db, 0)
    const template = await dir.template(service.id, o.template)
    if (!template || template.archived) throw new Error(`no template ${clean(o.template)} in service ${clean(service.name)}`)
    const { sealer } = messagingKeys(config)
    const r = await createJob({ db, dir, sealer, region: config.exposure.defaultRegion, store: storeFor(config.messaging.jobStore, config) }, {
      service, template, keyType: 'normal', apiKeyId: null, csv: readFileSync(file), name: basename(file), scheduledFor: at, createdBy: process.env.USER || 'herald' })
    // The CLI is one more way texts are created: the same limits as the API's live key (createJob, admit.ts).
    if (!r.ok) throw new Error(`${clean(file)} was not accepted:\n  ${r.errors.map(clean).join('\n  ')}`)
    print(o.json, r, `job ${r.id}: ${r.rows} texts, ${r.status}${at ? ` for ${at.toISOString()}` : ''}; follow it with herald jobs`)
  })
}

export async function jobCancelCommand(id: string) {
  return withDb(async ({ db }) => {
    const [job] = await db.query('SELECT service_id, status FROM jobs WHERE id::text = $1', [id])
    if (!job) throw new Error(`no job ${clean(id)}`)
    if (!(await cancelJob(db, job.service_id, id))) throw new Error(`job ${clean(id)} is ${job.status}: it cannot be cancelled`)
    console.log(`job ${id} cancelled, with its texts not yet sent`)
  })
}

export interface CallbackOptions { service: string; kind?: string; url?: string; remove?: boolean; tokenStdin?: boolean; json?: boolean }

/**
 * `herald service callback`: sets (--url, the token from stdin), removes (--remove) or shows a service's
 * callbacks (URLs only, never tokens) with their last failures. Returns what it prints.
 */
export async function serviceCallback(db: Queryable, sealer: Sealer, o: CallbackOptions, token?: string): Promise<{ value: unknown; text: string }> {
  const service = await findService(db, o.service)
  if (o.remove || o.url !== undefined) {
    if (!isCallbackKind(o.kind)) throw new Error(`--kind must be one of ${CALLBACK_KINDS.join(', ')}`)
    if (o.remove) {
      if (!(await removeCallback(db, service.id, o.kind))) throw new Error(`service ${clean(service.name)} has no ${o.kind} callback`)
      return { value: { removed: o.kind }, text: `${o.kind} callback of ${clean(service.name)} removed: callbacks still queued for it will fail` }
    }
    const problems = checkCallback({ kind: o.kind, url: o.url, bearer_token: token })
    if (problems.length) throw new Error(problems.map((p) => (p.field === 'url' ? `--url: ${p.message}` : p.field === 'bearer_token' ? `--token-stdin: ${p.message}` : p.message)).join('\n'))
    const set = await setCallback(db, sealer, service.id, o.kind, o.url!, token!)
    return { value: set, text: `${o.kind} callback of ${clean(service.name)} set: ${clean(set.url)} (its token is kept sealed and not shown again)` }
  }
  const callbacks = await listCallbacks(db, service.id)
  const failures = await callbackFailures(db, service.id)
  const lines = [callbacks.length ? table(callbacks.map((c) => ({ kind: c.kind, url: clean(c.url), updated: c.updatedAt }))) : `${clean(service.name)} has no callbacks: herald service callback --service S --kind delivery_status --url URL --token-stdin`]
  if (failures.length) lines.push('', 'last failures:', table(failures.map((f) => ({ id: f.id, kind: f.kind, about: f.subjectId, status: f.status ?? '', failed: f.failedAt, error: clean(f.error) }))))
  return { value: { callbacks, failures }, text: lines.join('\n') }
}

export async function serviceCallbackCommand(o: CallbackOptions) {
  if (o.url !== undefined && !o.tokenStdin) throw new Error('--url needs its bearer token: --token-stdin (as: printf %s "$TOKEN" | herald service callback …)')
  const token = o.tokenStdin ? (await text(process.stdin)).replace(/\r?\n$/, '') : undefined
  return withDb(async ({ db, config }) => {
    const r = await serviceCallback(db, messagingKeys(config).sealer, o, token)
    print(o.json, r.value, r.text)
  })
}

/** `herald service inbound-number`: sets (--number), removes (--remove) or lists a service's inbound numbers and where providers post to. */
export async function inboundNumberCommand(o: { service: string; number?: string; remove?: boolean; json?: boolean }) {
  return withDb(async ({ db, config }) => {
    const service = await findService(db, o.service)
    if (o.remove) {
      if (!o.number) throw new Error('--remove needs --number')
      if (!(await removeInboundNumber(db, service.id, o.number))) throw new Error(`service ${clean(service.name)} has no inbound number ${clean(o.number)}`)
    } else if (o.number) await setInboundNumber(db, service.id, o.number)
    const numbers = await inboundNumbersOf(db, service.id)
    const urls = config.messaging.publicUrl ? inboundUrls(config.messaging.publicUrl, secretKey(config)) : undefined
    print(o.json, { service_id: service.id, numbers, webhooks: urls ?? null }, [
      numbers.length ? `inbound numbers of ${clean(service.name)}: ${numbers.join(', ')}` : `${clean(service.name)} has no inbound number: herald service inbound-number --service ${service.id} --number +1…`,
      urls ? `point each number's inbound webhook at: Twilio ${urls.twilio}  Vonage ${urls.vonage}` : 'set HERALD_PUBLIC_URL to see the webhook URLs to give the providers',
    ].join('\n'))
  })
}
