/**
 * SMS templates as GOV.UK Notify writes them: ((name)) is replaced by the personalisation value of
 * that name; ((name??text)) shows `text` when the value is yes/true/1. Names match whatever their
 * case, spaces, hyphens and underscores (((First name)) takes first_name), as Notify's do.
 */
const PLACEHOLDER = /\(\(([^()?]+?)(\?\?([^()]*))?\)\)/g

const normal = (name: string) => name.toLowerCase().replace(/[\s_-]/g, '')
// notifications-utils' str2bool, on the value as Python would print it.
const truthy = (v: unknown) => !!v && ['yes', 'y', 'true', 't', '1', 'include', 'show'].includes(pyStr(v).toLowerCase())

/**
 * A value as Notify (Python) prints it in a text: str(value). JSON's true is Python's True, an
 * object a dict; nested deeper than Python would print is cut short, as a recursion is.
 */
function pyStr(v: unknown, depth = 0): string {
  if (typeof v === 'string') return depth === 0 ? v : pyQuote(v)
  if (v === null || v === undefined) return 'None'
  if (typeof v === 'boolean') return v ? 'True' : 'False'
  if (typeof v !== 'object') return String(v)
  if (depth > 50) return Array.isArray(v) ? '[...]' : '{...}'
  if (Array.isArray(v)) return `[${v.map((x) => pyStr(x, depth + 1)).join(', ')}]`
  return `{${Object.entries(v).map(([k, x]) => `${pyQuote(k)}: ${pyStr(x, depth + 1)}`).join(', ')}}`
}

/** Python's repr of a string: single quotes unless it holds one and no double quote. */
function pyQuote(s: string): string {
  const q = s.includes("'") && !s.includes('"') ? '"' : "'"
  const body = s.replace(/[\\\n\r\t]|[\x00-\x1f\x7f]/g, (c) => ({ '\\': '\\\\', '\n': '\\n', '\r': '\\r', '\t': '\\t' })[c]
    ?? `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`)
  return q + (q === "'" ? body.replace(/'/g, "\\'") : body) + q
}

/** A list as Notify writes it in a text: "Ada, Bob and Cy" (notifications-utils' formatted_list); empty and null items left out. */
function formattedList(items: unknown[]): string {
  const vals = items.filter((x) => x !== null && x !== undefined).map((x) => pyStr(x, 0).trim()).filter((x) => x !== '')
  return vals.length <= 1 ? (vals[0] ?? '') : `${vals.slice(0, -1).join(', ')} and ${vals[vals.length - 1]}`
}

const shown = (v: unknown) => (Array.isArray(v) ? formattedList(v) : pyStr(v))

/** The placeholder names of a body, each once, as first written. */
export function placeholders(body: string): string[] {
  const seen = new Map<string, string>()
  for (const m of body.matchAll(PLACEHOLDER)) {
    const name = m[1].trim()
    if (!seen.has(normal(name))) seen.set(normal(name), name)
  }
  return [...seen.values()]
}

/** The text with every placeholder filled, or the names personalisation lacks. */
export function render(body: string, personalisation: Record<string, unknown> | undefined): { text: string; missing: string[] } {
  const values = new Map<string, unknown>()
  for (const [k, v] of Object.entries(personalisation ?? {})) if (v !== null && v !== undefined) values.set(normal(k), v)
  const missing = placeholders(body).filter((name) => !values.has(normal(name)))
  if (missing.length > 0) return { text: '', missing }
  const text = body.replace(PLACEHOLDER, (_all, name: string, conditional: string | undefined, text: string | undefined) => {
    const value = values.get(normal(name.trim()))
    return conditional !== undefined ? (truthy(value) ? text ?? '' : '') : shown(value)
  })
  return { text: text.trim(), missing: [] }
}
