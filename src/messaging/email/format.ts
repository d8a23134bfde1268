/**
 * Email bodies as GOV.UK Notify formats them (its "formatting" guide): a line starting `#` is a
 * heading (`##` a smaller one), lines starting `*` or `-` (or `1.`) a list, a line of `---` a rule,
 * a paragraph starting `^` inset text, [text](url) and bare https:// addresses links, a blank line
 * between paragraphs and a single line break kept. Placeholders are filled first (templates.ts), so
 * a value may use the same formatting a template may, but never HTML: every character of text is
 * escaped, and a link goes only to http(s) or mailto. The same body is written as HTML and as plain text.
 */
import { placeholders, render } from '../templates.ts'

type Block =
  | { kind: 'heading'; level: 1 | 2; text: string }
  | { kind: 'list'; ordered: boolean; items: string[] }
  | { kind: 'rule' }
  | { kind: 'inset'; lines: string[] }
  | { kind: 'paragraph'; lines: string[] }

const BULLET = /^\s*[*•-]\s+(.*)$/
const NUMBERED = /^\s*\d+\.\s+(.*)$/
const RULE = /^\s*(?:-\s*){3,}$|^\s*(?:\*\s*){3,}$/
const HEADING = /^\s*(#{1,2})\s*(.+?)\s*#*\s*$/

/** The body's blocks, in order. */
export function blocks(body: string): Block[] {
  const out: Block[] = []
  let para: string[] = []
  const flush = () => {
    if (para.length === 0) return
    if (para[0].trimStart().startsWith('^')) out.push({ kind: 'inset', lines: [para[0].trimStart().slice(1).trim(), ...para.slice(1)] })
    else out.push({ kind: 'paragraph', lines: para })
    para = []
  }
  for (const raw of body.replace(/\r\n?/g, '\n').split('\n')) {
    const line = raw.replace(/\s+$/, '')
    let m: RegExpExecArray | null
    if (line.trim() === '') flush()
    else if (RULE.test(line)) { flush(); out.push({ kind: 'rule' }) }
    else if ((m = HEADING.exec(line))) { flush(); out.push({ kind: 'heading', level: m[1].length as 1 | 2, text: m[2] }) }
    else if ((m = BULLET.exec(line) ?? NUMBERED.exec(line))) {
      flush()
      const ordered = !BULLET.test(line)
      const last = out[out.length - 1]
      if (last?.kind === 'list' && last.ordered === ordered) last.items.push(m[1])
      else out.push({ kind: 'list', ordered, items: [m[1]] })
    } else {
      const last = out[out.length - 1]
      // A line straight after a list item, not blank: it continues the item (as Notify's markdown reads it).
      if (para.length === 0 && last?.kind === 'list' && /^\s+/.test(raw)) last.items[last.items.length - 1] += ` ${line.trim()}`
      else para.push(line.trim())
    }
  }
  flush()
  return out
}

export const escapeHtml = (s: string) => s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!)

const LINK = /\[([^\]\n]+)\]\(([^)\s]+)\)|(https?:\/\/[^\s<>()]+[^\s<>().,;:!?'"])/g
const SAFE_URL = /^(https?:\/\/|mailto:)/i

/** One line of text as HTML: escaped, with its links. */
function inline(text: string): string {
  let html = ''
  let at = 0
  for (const m of text.matchAll(LINK)) {
    html += escapeHtml(text.slice(at, m.index))
    const [all, label, target, bare] = m
    const url = bare ?? target
    html += SAFE_URL.test(url) ? `<a href="${escapeHtml(url)}" style="color:#1d70b8">${escapeHtml(label ?? url)}</a>` : escapeHtml(all)
    at = m.index! + all.length
  }
  return html + escapeHtml(text.slice(at))
}

/** One line as plain text: a link as "label (url)". */
const plain = (text: string) => text.replace(LINK, (all, label: string | undefined, target: string | undefined, bare: string | undefined) =>
  bare ?? (label && target && SAFE_URL.test(target) ? `${label} (${target})` : all))

const P = 'style="font-size:19px;line-height:1.3;margin:0 0 20px 0;color:#0b0c0c"'

export function bodyHtml(body: string): string {
  return blocks(body).map((b) => {
    switch (b.kind) {
      case 'heading': return b.level === 1
        ? `<h2 style="font-size:27px;line-height:1.2;margin:0 0 15px 0;color:#0b0c0c">${inline(b.text)}</h2>`
        : `<h3 style="font-size:21px;line-height:1.2;margin:0 0 10px 0;color:#0b0c0c">${inline(b.text)}</h3>`
      case 'list': {
        const tag = b.ordered ? 'ol' : 'ul'
        return `<${tag} style="margin:0 0 20px 0;padding:0 0 0 20px">${b.items.map((i) => `<li ${P.replace('0 0 20px 0', '5px 0')}>${inline(i)}</li>`).join('')}</${tag}>`
      }
      case 'rule': return '<hr style="border:0;height:1px;background:#b1b4b6;margin:30px 0">'
      case 'inset': return `<blockquote style="border-left:10px solid #b1b4b6;margin:0 0 20px 0;padding:15px 0 0.1px 15px"><p ${P}>${b.lines.map(inline).join('<br>')}</p></blockquote>`
      case 'paragraph': return `<p ${P}>${b.lines.map(inline).join('<br>')}</p>`
    }
  }).join('\n')
}

export function bodyText(body: string): string {
  return blocks(body).map((b) => {
    switch (b.kind) {
      case 'heading': return `${plain(b.text)}\n${'-'.repeat(Math.min(60, [...b.text].length))}`
      case 'list': return b.items.map((i, n) => `${b.ordered ? `${n + 1}.` : '•'} ${plain(i)}`).join('\n')
      case 'rule': return '='.repeat(40)
      case 'inset': case 'paragraph': return b.lines.map(plain).join('\n')
    }
  }).join('\n\n')
}

/** The whole HTML document of an email: the body in a plain, readable frame (no remote images, no scripts). */
export function htmlDocument(subject: string, html: string): string {
  return `<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width"><title>${escapeHtml(subject)}</title></head>` +
    `<body style="font-family:Helvetica,Arial,sans-serif;margin:0;padding:20px;background:#ffffff">` +
    `<div style="max-width:580px;margin:0 auto">\n${html}\n</div></body></html>`
}

/** A subject with its placeholders filled: one line, spaces collapsed (Notify's SubjectMixin). */
const oneLine = (s: string) => s.replace(/\s+/g, ' ').trim()

export interface RenderedEmail { subject: string; body: string; html: string; text: string; missing: string[] }

/** An email template with its personalisation: the subject, the body as written (Notify's `body`), as HTML and as plain text. */
export function renderEmail(subject: string, body: string, personalisation: Record<string, unknown> | undefined): RenderedEmail {
  const s = render(subject, personalisation)
  const b = render(body, personalisation)
  const missing = [...new Set([...s.missing, ...b.missing])]
  if (missing.length) return { subject: '', body: '', html: '', text: '', missing }
  const sub = oneLine(s.text)
  return { subject: sub, body: b.text, html: htmlDocument(sub, bodyHtml(b.text)), text: bodyText(b.text), missing }
}

/** The placeholders of an email template: the subject's, then the body's, each once. */
export const emailPlaceholders = (subject: string, body: string) => placeholders(`${subject}\n${body}`)
