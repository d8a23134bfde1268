/**
 * Case-block XForms as CommCare's receiver (`POST /a/{domain}/receiver/`) takes them: parse the form,
 * check every case block against the store and the blocks before it, then apply all of them or none.
 * Outcomes: the form is applied (the cases it touched are returned), or FormRejected names what is
 * wrong and nothing changed.
 */
import { randomUUID } from 'node:crypto'
import { XMLParser, XMLValidator } from 'fast-xml-parser'
import { parseMicros, type CaseStore, type SandboxCase } from './store.ts'

export class FormRejected extends Error {
  constructor(message: string) {
    super(message)
    this.name = 'FormRejected'
  }
}

interface IndexRef { name: string; caseId: string; caseType: string; relationship: string }
interface CaseBlock {
  caseId: string
  dateModified?: string
  userId: string
  create?: Record<string, string>
  update?: Record<string, string>
  close: boolean
  indices: IndexRef[]
}
export interface Form { blocks: CaseBlock[]; userId: string; instanceId: string }

// preserveOrder keeps blocks in document order (an index may point at a case created earlier in the
// form), and untrimmed, unparsed text keeps property values exactly as sent ("" for an empty element).
// htmlEntities is what makes the parser decode numeric character references (&#233;), which are plain XML.
const parser = new XMLParser({
  preserveOrder: true, removeNSPrefix: true, ignoreAttributes: false, attributeNamePrefix: '',
  trimValues: false, parseTagValue: false, parseAttributeValue: false, htmlEntities: true,
})

type XNode = Record<string, unknown>
const tagOf = (n: XNode) => Object.keys(n).find((k) => k !== ':@' && k !== '#text' && !k.startsWith('?'))
const kids = (n: XNode): XNode[] => {
  const t = tagOf(n)
  return t && Array.isArray(n[t]) ? (n[t] as XNode[]) : []
}
const elements = (n: XNode) => kids(n).filter((k) => tagOf(k) !== undefined)
const attrs = (n: XNode) => (n[':@'] ?? {}) as Record<string, string>
const text = (n: XNode) => kids(n).map((k) => (typeof k['#text'] === 'string' ? k['#text'] : '')).join('')
const child = (n: XNode, tag: string) => elements(n).find((k) => tagOf(k) === tag)

/** Case elements anywhere in the form (CommCare allows them inside groups), plus the first meta block. */
function collect(n: XNode, out: { cases: XNode[]; meta?: XNode }): void {
  for (const k of elements(n)) {
    const tag = tagOf(k)
    if (tag === 'case') out.cases.push(k)
    else if (tag === 'meta' && !out.meta) out.meta = k
    else collect(k, out)
  }
}

function properties(n: XNode): Record<string, string> {
  return Object.fromEntries(elements(n).map((k) => [tagOf(k)!, text(k)]))
}

function parseBlock(n: XNode, i: number): CaseBlock {
  const a = attrs(n)
  const caseId = (a.case_id ?? '').trim()
  if (!caseId) throw new FormRejected(`case block ${i + 1} has no case_id attribute`)
  const where = `case ${caseId}`
  if (a.date_modified !== undefined && parseMicros(a.date_modified) === undefined) {
    throw new FormRejected(`${where}: date_modified "${a.date_modified}" is not an ISO 8601 time`)
  }
  const block: CaseBlock = { caseId, dateModified: a.date_modified, userId: a.user_id ?? '', close: false, indices: [] }
  for (const k of elements(n)) {
    const tag = tagOf(k)!
    if (tag === 'create') {
      const props = properties(k)
      if (!props.case_type?.trim()) throw new FormRejected(`${where}: create has no case_type`)
      if (props.case_name === undefined) throw new FormRejected(`${where}: create has no case_name`)
      block.create = { ...block.create, ...props, case_type: props.case_type.trim() }
    } else if (tag === 'update') block.update = { ...block.update, ...properties(k) }
    else if (tag === 'close') block.close = true
    else if (tag === 'index') {
      for (const ix of elements(k)) {
        const ia = attrs(ix)
        const ref = { name: tagOf(ix)!, caseId: text(ix).trim(), caseType: (ia.case_type ?? '').trim(), relationship: ia.relationship ?? 'child' }
        if (ref.relationship !== 'child' && ref.relationship !== 'extension') {
          throw new FormRejected(`${where}: index ${ref.name} has relationship "${ref.relationship}" (child or extension)`)
        }
        if (ref.caseId && !ref.caseType) throw new FormRejected(`${where}: index ${ref.name} has no case_type attribute`)
        block.indices.push(ref)
      }
    } else if (tag !== 'attachment') throw new FormRejected(`${where}: unknown element <${tag}> in a case block`)
  }
  return block
}

export function parseForm(xml: string): Form {
  const valid = XMLValidator.validate(xml)
  if (valid !== true) throw new FormRejected(`malformed XML: ${valid.err.msg} (line ${valid.err.line})`)
  const root = (parser.parse(xml) as XNode[]).find((n) => tagOf(n) !== undefined)
  if (!root) throw new FormRejected('malformed XML: no root element')
  const found: { cases: XNode[]; meta?: XNode } = { cases: [] }
  collect(root, found)
  const meta = found.meta
  const metaText = (tag: string) => {
    const k = meta && child(meta, tag)
    return k ? text(k).trim() : ''
  }
  return { blocks: found.cases.map(parseBlock), userId: metaText('userID'), instanceId: metaText('instanceID') }
}

/** Refuses the whole form at the first block that cannot apply; changes nothing. */
function validate(store: CaseStore, domain: string, form: Form): void {
  const created = new Set<string>() // cases this form creates, which later blocks may update or index
  for (const b of form.blocks) {
    const existing = store.raw(b.caseId)
    if (existing && existing.domain !== domain) throw new FormRejected(`case ${b.caseId} belongs to another domain`)
    if (!b.create && !existing && !created.has(b.caseId)) {
      throw new FormRejected(`case ${b.caseId} does not exist in domain ${domain} and the block does not create it`)
    }
    for (const ix of b.indices) {
      if (!ix.caseId) continue // an empty index removes it
      const target = store.raw(ix.caseId)
      if (target ? target.domain !== domain : !created.has(ix.caseId)) {
        throw new FormRejected(`case ${b.caseId}: index ${ix.name} points at ${ix.caseId}, which is not a case in domain ${domain}`)
      }
    }
    if (b.create && !existing) created.add(b.caseId)
  }
}

/** Applies a parsed form to the store; returns the cases it touched, in their final state. */
export function applyForm(store: CaseStore, domain: string, form: Form): SandboxCase[] {
  validate(store, domain, form)
  const instanceId = form.instanceId || randomUUID()
  const touched = new Map<string, SandboxCase>()
  for (const b of form.blocks) {
    const userId = form.userId || b.userId
    let c = store.raw(b.caseId)
    const isNew = !c
    // A create for a case that exists is an update: a re-sent form must never open a second case.
    if (!c) store.put((c = store.newCase(domain, b.caseId, b.create!.case_type, userId, b.create!, b.dateModified)))
    else if (b.create) setProperties(c, b.create)
    if (b.update) setProperties(c, b.update)
    for (const ix of b.indices) {
      store.setIndex(c, ix.name, ix.caseId ? { case_id: ix.caseId, case_type: ix.caseType, relationship: ix.relationship as 'child' | 'extension' } : undefined)
    }
    const now = isNew ? c.server_date_modified : store.stamp()
    if (b.close && !c.closed) Object.assign(c, { closed: true, date_closed: now })
    Object.assign(c, { user_id: userId, date_modified: b.dateModified ?? now, server_date_modified: now })
    if (!c.xform_ids.includes(instanceId)) c.xform_ids.push(instanceId)
    touched.set(c.case_id, c)
  }
  for (const c of touched.values()) store.changed(c)
  return [...touched.values()]
}

function setProperties(c: SandboxCase, props: Record<string, string>): void {
  Object.assign(c.properties, props)
  if (props.case_type?.trim()) c.case_type = props.case_type.trim()
}
