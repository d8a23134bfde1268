/** Sandboxes that close after each test, authenticated requests, and case-block XForms built from parts. */
import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import type { CommCareSandbox, CommCareSandboxOptions } from '../../src/sandbox/commcare/server.ts'
import { startSandbox } from '../helpers/casesync.ts'

export const INDEX_CASE_XML = readFileSync(fileURLToPath(new URL('../fixtures/commcare/index_case.xml', import.meta.url)), 'utf8')
export const DOMAIN = 'ny-allegany-cdcms'
const AUTH = { authorization: 'ApiKey herald:sandbox' }

/** A sandbox closed after the test (test/helpers/casesync.ts). */
export const sandbox = (opts: Partial<CommCareSandboxOptions> = {}) => startSandbox(opts)

/** GET with the sandbox's credentials; `path` is under the sandbox's URL. */
export function get(s: CommCareSandbox, path: string, headers: Record<string, string> = AUTH): Promise<Response> {
  return fetch(s.url + path, { headers })
}

export async function getJson<T = any>(s: CommCareSandbox, path: string): Promise<T> {
  const res = await get(s, path)
  if (res.status !== 200) throw new Error(`GET ${path}: ${res.status} ${await res.text()}`)
  return (await res.json()) as T
}

export async function postForm(s: CommCareSandbox, xml: string, domain = DOMAIN): Promise<{ status: number; body: string }> {
  const res = await fetch(`${s.url}/a/${domain}/receiver/`, { method: 'POST', headers: { ...AUTH, 'content-type': 'text/xml' }, body: xml })
  return { status: res.status, body: await res.text() }
}

const esc = (v: string) => v.replace(/&/g, '&amp;').replace(/</g, '&lt;')
const elements = (props: Record<string, string>) => Object.entries(props).map(([k, v]) => `<${k}>${esc(v)}</${k}>`).join('')

export interface Block {
  id: string
  create?: Record<string, string>
  update?: Record<string, string>
  close?: boolean
  index?: { name?: string; caseId: string; caseType?: string; relationship?: string }
}

/** An XForm with these case blocks, in the default case namespace (the fixture uses prefixes). */
export function form(blocks: Block[], instanceId = ''): string {
  const cases = blocks.map((b) => {
    const ix = b.index
    return `<case xmlns="http://commcarehq.org/case/transaction/v2" case_id="${b.id}">` +
      (b.create ? `<create>${elements(b.create)}</create>` : '') +
      (b.update ? `<update>${elements(b.update)}</update>` : '') +
      (ix ? `<index><${ix.name ?? 'parent'} case_type="${ix.caseType ?? 'patient'}"${ix.relationship ? ` relationship="${ix.relationship}"` : ''}>${ix.caseId}</${ix.name ?? 'parent'}></index>` : '') +
      (b.close ? '<close/>' : '') + '</case>'
  })
  return `<?xml version="1.0"?><data xmlns="http://herald.test/form">${cases.join('')}` +
    `<meta xmlns="http://openrosa.org/jr/xforms"><userID>herald-user</userID><instanceID>${instanceId}</instanceID></meta></data>`
}

export const patient = (externalId: string, extra: Record<string, string> = {}) =>
  ({ case_type: 'patient', case_name: 'TEST PATIENT', external_id: externalId, ...extra })
