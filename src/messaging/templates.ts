/**
 * SMS templates as GOV.UK Notify writes them: ((name)) is replaced by the personalisation value of
 * that name; ((name??text)) shows `text` when the value is yes/true/1. Names match whatever their
 * case, spaces, hyphens and underscores (((First name)) takes first_name), as Notify's do.
 */
const PLACEHOLDER = /\(\(([^()?]+?)(\?\?([^()]*))?\)\)/g

const normal = (name: string) => name.toLowerCase().replace(/[\s_-]/g, '')
const truthy = (v: unknown) => ['true', 'yes', 'y', '1'].includes(String(v).trim().toLowerCase())

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
  const text = body.replace(PLACEHOLDER, (_all, name: string, conditional: string | undefined, shown: string | undefined) => {
    const value = values.get(normal(name.trim()))
    return conditional !== undefined ? (truthy(value) ? shown ?? '' : '') : String(value)
  })
  return { text: text.trim(), missing: [] }
}
