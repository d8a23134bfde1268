/**
 * The XForm case sync posts to CommCare's receiver: one patient case block (create or update) and
 * one lab_result block per lab result, indexed to the patient, in the shape of
 * fixtures/commcare/index_case.xml. A re-sent form names the same case_ids, so CommCare updates
 * the same cases: that is what makes a repeated post after a crash harmless.
 *
 * The form's name, xmlns and user are the project space's (HERALD_COMMCARE_FORM_NAME, _FORM_XMLNS,
 * _USER_ID): its reports find forms by xmlns, and attribute them by userID. The lab_result index is
 * a child index by default, as New York's spaces hold them (HERALD_COMMCARE_LAB_RESULT_INDEX).
 */
import { randomUUID } from 'node:crypto'
import type { CommCareConfig } from '../config.ts'

export interface CaseBlock {
  caseId: string
  /** Create the case (it is not in CommCare yet), or only update it. */
  create: boolean
  caseType: string
  caseName: string
  ownerId: string
  properties: Record<string, string>
  /** For a new lab result: the patient case it is indexed to. An existing one keeps the index it has. */
  parent?: { caseId: string; caseType: string }
}

/** child or extension: how a lab_result case is indexed to its patient. */
export type IndexRelationship = CommCareConfig['labResultIndex']

export interface FormMeta {
  userId: string
  username: string
  /** The form's name and xmlns, as the project space's reports know them; Herald's own by default. */
  name?: string
  xmlns?: string
  /** The relationship of every parent index in the form; child by default. */
  indexRelationship?: IndexRelationship
  /** Fixed in tests; a fresh uuid otherwise. */
  instanceId?: string
  now?: Date
}

export const CASE_NS = 'http://commcarehq.org/case/transaction/v2'
export const META_NS = 'http://openrosa.org/jr/xforms'
export const FORM_NS = 'http://herald.invalid/casesync'
export const FORM_NAME = 'Herald case sync'

const XML_ESCAPES: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&apos;' }
const esc = (s: string) => s.replace(/[&<>"']/g, (c) => XML_ESCAPES[c]).replace(/[\u0000-\u0008\u000b\u000c\u000e-\u001f]/g, '')

/** Property names become element names: anything else would break the form, so it is refused. */
const NAME = /^[A-Za-z_][A-Za-z0-9_.-]*$/
// Properties CommCare gives every case, which a form cannot set.
const RESERVED = new Set(['case_id', 'case_type', 'case_name', 'owner_id', 'date_opened', 'closed', 'date_closed'])

function element(name: string, value: string, indent: string): string {
  if (!NAME.test(name)) throw new Error(`case property "${name}" is not a valid XML element name`)
  return `${indent}<n0:${name}>${esc(value)}</n0:${name}>`
}

/**
 * A child index carries no relationship attribute: that is how CommCare's own forms and New York's
 * integrations write it (child is the default), and how the space's case lists expect to find it.
 */
function parentIndex(p: NonNullable<CaseBlock['parent']>, relationship: IndexRelationship): string {
  const attr = relationship === 'extension' ? ' relationship="extension"' : ''
  return `      <n0:parent case_type="${esc(p.caseType)}"${attr}>${esc(p.caseId)}</n0:parent>`
}

function block(b: CaseBlock, dateModified: string, userId: string, relationship: IndexRelationship): string {
  const lines = [`  <n0:case case_id="${esc(b.caseId)}" date_modified="${dateModified}" user_id="${esc(userId)}" xmlns:n0="${CASE_NS}">`]
  if (b.create) {
    lines.push('    <n0:create>', element('case_type', b.caseType, '      '), element('case_name', b.caseName, '      '),
      element('owner_id', b.ownerId, '      '), '    </n0:create>')
  }
  const props = Object.entries(b.properties).filter(([k]) => !RESERVED.has(k)).sort(([a], [c]) => a.localeCompare(c))
  if (props.length > 0) {
    lines.push('    <n0:update>', ...props.map(([k, v]) => element(k, v, '      ')), '    </n0:update>')
  }
  if (b.parent) {
    lines.push('    <n0:index>', parentIndex(b.parent, relationship), '    </n0:index>')
  }
  lines.push('  </n0:case>')
  return lines.join('\n')
}

export function buildForm(blocks: CaseBlock[], meta: FormMeta): string {
  const now = (meta.now ?? new Date()).toISOString().replace(/\.\d{3}Z$/, 'Z')
  return [
    `<?xml version="1.0" encoding="UTF-8"?>`,
    `<data name="${esc(meta.name ?? FORM_NAME)}" uiVersion="1" version="1" xmlns="${esc(meta.xmlns ?? FORM_NS)}" xmlns:jrm="http://dev.commcarehq.org/jr/xforms">`,
    ...blocks.map((b) => block(b, now, meta.userId, meta.indexRelationship ?? 'child')),
    `  <n1:meta xmlns:n1="${META_NS}">`,
    '    <n1:deviceID>Herald</n1:deviceID>',
    `    <n1:timeStart>${now}</n1:timeStart>`,
    `    <n1:timeEnd>${now}</n1:timeEnd>`,
    `    <n1:username>${esc(meta.username)}</n1:username>`,
    `    <n1:userID>${esc(meta.userId)}</n1:userID>`,
    `    <n1:instanceID>${esc(meta.instanceId ?? randomUUID())}</n1:instanceID>`,
    '  </n1:meta>',
    '</data>',
    '',
  ].join('\n')
}

/**
 * The meta of the forms case sync posts, from its settings. The form settings are optional here only
 * because the outbound engine's options name the fields it reads; the config always has them.
 */
export function formMeta(c: Pick<CommCareConfig, 'user' | 'userId'> & Partial<Pick<CommCareConfig, 'formName' | 'formXmlns' | 'labResultIndex'>>): FormMeta {
  return { userId: c.userId, username: c.user, name: c.formName, xmlns: c.formXmlns, indexRelationship: c.labResultIndex }
}
